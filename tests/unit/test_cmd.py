import os

from agentkit import cmd
from tests import base


class EarlyConcurrencyModeTest(base.TestCase):

    def _write(self, name, text):
        path = os.path.join(self.useFixture(__import__('fixtures').TempDir()).path, name)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def test_default_is_threading(self):
        self.assertEqual('threading', cmd.early_concurrency_mode([]))

    def test_last_config_file_wins(self):
        a = self._write('a.ini', '[DEFAULT]\nconcurrency_mode = eventlet\n')
        b = self._write('b.ini', '[DEFAULT]\nhost = x\n')
        c = self._write('c.ini', '[DEFAULT]\nconcurrency_mode = threading\n')
        self.assertEqual('eventlet', cmd.early_concurrency_mode(
            ['--config-file', a, '--config-file=' + b]))
        self.assertEqual('threading', cmd.early_concurrency_mode(
            ['--config-file', a, '--config-file', c]))

    def test_config_dir_and_unreadable_files(self):
        d = self.useFixture(__import__('fixtures').TempDir()).path
        with open(os.path.join(d, '10.conf'), 'w') as f:
            f.write('[DEFAULT]\nconcurrency_mode = eventlet\n')
        with open(os.path.join(d, '20.conf'), 'w') as f:
            f.write('not an ini file [\n')
        self.assertEqual('eventlet', cmd.early_concurrency_mode(['--config-dir', d]))
        self.assertEqual('threading', cmd.early_concurrency_mode(
            ['--config-file', '/nonexistent.ini']))
