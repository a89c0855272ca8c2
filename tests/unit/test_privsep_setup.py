"""A privsep daemon that dies with requests unread must not hang the agent."""

import socket
import threading

from oslo_privsep import comm

from agentkit import privsep_setup
from tests import base


class ResetIsEofTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        original = comm.Deserializer.__next__
        self.addCleanup(setattr, comm.Deserializer, '__next__', original)
        privsep_setup.treat_reset_as_eof()
        privsep_setup.treat_reset_as_eof()  # idempotent: wrapped once

    def test_waiting_call_fails_and_channel_stops_when_the_daemon_resets(self) -> None:
        agent_end, daemon_end = socket.socketpair()
        self.addCleanup(agent_end.close)
        channel = comm.ClientChannel(agent_end)
        outcome: list[BaseException | object] = []

        def call() -> None:
            try:
                outcome.append(channel.send_recv((comm.Message.CALL.value, 'f', [], {})))
            except BaseException as exc:  # the outcome under test
                outcome.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        daemon_end.settimeout(5)
        self.assertTrue(daemon_end.recv(1))  # the request arrived ...
        daemon_end.close()                   # ... and the daemon died with it unread
        caller.join(10)
        self.assertFalse(caller.is_alive(), 'the call still waits for a dead daemon')
        self.assertIsInstance(outcome[0], OSError)
        self.assertIn('Premature eof', str(outcome[0]))
        self.assertFalse(channel.running)  # so oslo.privsep restarts it next call

    def test_a_clean_channel_still_answers(self) -> None:
        agent_end, daemon_end = socket.socketpair()
        self.addCleanup(agent_end.close)
        self.addCleanup(daemon_end.close)
        channel = comm.ClientChannel(agent_end)
        reader = comm.Deserializer(daemon_end)
        writer = comm.Serializer(daemon_end)

        def daemon() -> None:
            msgid, _request = next(reader)
            writer.send((msgid, (comm.Message.RET.value, 'ok')))

        threading.Thread(target=daemon, daemon=True).start()
        reply = channel.send_recv((comm.Message.CALL.value, 'f', [], {}))
        self.assertEqual((comm.Message.RET.value, 'ok'), tuple(reply))
        self.assertTrue(channel.running)
