from unittest import mock

from agentkit.agent import state_report
from tests import base


class StateReporterTest(base.TestCase):

    def _reporter(self, api, **kw):
        return state_report.StateReporter(
            api, lambda: {'binary': 'agentkit-l2', 'host': 'h'},
            interval=lambda: 30, **kw)

    def test_start_flag_only_on_first_successful_report(self):
        api = mock.Mock()
        api.report_state.side_effect = [RuntimeError('down'), 'alive', 'alive']
        rep = self._reporter(api)
        self.assertFalse(rep.report_once())
        self.assertTrue(rep.report_once())
        self.assertTrue(rep.report_once())
        states = [c.args[0] for c in api.report_state.call_args_list]
        self.assertTrue(states[0]['start_flag'])
        self.assertTrue(states[1]['start_flag'])  # first one failed: resent
        self.assertNotIn('start_flag', states[2])
        self.assertEqual({rep.uuid}, {s['uuid'] for s in states})
        self.assertEqual((2, 1), (rep.reports_sent, rep.failures))

    def test_revived_triggers_resync(self):
        api = mock.Mock()
        api.report_state.return_value = 'revived'
        revived = mock.Mock()
        reporter = self._reporter(api, on_revived=revived)
        # The first report's "revived" only repeats what start does anyway.
        reporter.report_once()
        revived.assert_not_called()
        reporter.report_once()
        revived.assert_called_once_with()

    def test_answering_again_after_failures_triggers_resync(self):
        # Casts sent while the broker or the server was away may be lost.
        api = mock.Mock()
        api.report_state.return_value = 'alive'
        resync = mock.Mock()
        reporter = self._reporter(api, on_revived=resync)
        reporter.report_once()
        reporter.report_once()
        resync.assert_not_called()
        api.report_state.side_effect = [ConnectionError('broker away'), 'alive', 'alive']
        self.assertFalse(reporter.report_once())
        self.assertTrue(reporter.report_once())
        resync.assert_called_once_with()
        reporter.report_once()
        resync.assert_called_once_with()

    def test_a_report_that_waited_out_the_broker_triggers_resync(self):
        """oslo.messaging may hold a send while it reconnects: no failure, but
        the agent was cut off for longer than the report's own timeout."""
        api = mock.Mock()
        api.report_state.return_value = 'alive'
        resync = mock.Mock()
        reporter = self._reporter(api, on_revived=resync)
        clock = iter([0.0, 1.0,      # first report: 1 s
                      10.0, 39.0,    # a slow server: 29 s, within the timeout (30)
                      50.0, 90.0,    # held 40 s: the send waited for the broker
                      100.0, 101.0])
        with mock.patch.object(state_report.time, 'monotonic', lambda: next(clock)):
            reporter.report_once()
            reporter.report_once()
            resync.assert_not_called()
            reporter.report_once()
            resync.assert_called_once_with()
            reporter.report_once()
        resync.assert_called_once_with()
        self.assertIn('took 40s', self.log.output)

    def test_metadata_style_casts_after_first_report(self):
        api = mock.Mock()
        rep = self._reporter(api, use_call=False)
        rep.report_once()
        rep.report_once()
        calls = [c.kwargs['use_call'] for c in api.report_state.call_args_list]
        self.assertEqual([True, False], calls)

    def test_zero_interval_does_not_start(self):
        rep = state_report.StateReporter(mock.Mock(), dict, interval=lambda: 0)
        rep.start()
        self.assertIsNone(rep._thread)
