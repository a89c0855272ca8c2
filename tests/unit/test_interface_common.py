"""wait_for_device: polls until the device appears, fails after its timeout."""

import time

from drivers.interface import common
from tests import base


class FakeDevice:

    def __init__(self, appears_after: int | None) -> None:
        self.name = 'tapx'
        self.checks = 0
        self.appears_after = appears_after

    def exists(self) -> bool:
        self.checks += 1
        return self.appears_after is not None and self.checks > self.appears_after


class WaitForDeviceTest(base.TestCase):

    def test_returns_once_the_device_exists(self):
        device = FakeDevice(appears_after=3)
        common.wait_for_device(device)
        self.assertEqual(4, device.checks)

    def test_present_device_is_checked_once(self):
        device = FakeDevice(appears_after=0)
        common.wait_for_device(device)
        self.assertEqual(1, device.checks)

    def test_times_out_with_the_device_name(self):
        start = time.monotonic()
        exc = self.assertRaises(RuntimeError, common.wait_for_device,
                                FakeDevice(appears_after=None), 0.1)
        self.assertGreaterEqual(time.monotonic() - start, 0.1)
        self.assertIn('tapx', str(exc))
