"""Console-script entry points; each is a thin call into :mod:`agentkit.service`.

eventlet must patch the standard library before anything else creates locks
or threads (oslo.log's handlers, oslo.messaging), so the concurrency mode is
read from the configuration files here, before :mod:`agentkit.service` and
its imports are loaded; oslo.config later re-reads and validates it.
"""

import configparser
import glob
import os
import sys


def _config_files(argv: list[str]) -> list[str]:
    files: list[str] = []
    args = iter(argv)
    for arg in args:
        for flag in ('--config-file', '--config-dir'):
            value = None
            if arg == flag:
                value = next(args, None)
            elif arg.startswith(flag + '='):
                value = arg.split('=', 1)[1]
            if value is None:
                continue
            if flag == '--config-file':
                files.append(value)
            else:
                files.extend(sorted(glob.glob(os.path.join(value, '*.conf'))))
    return files


def early_concurrency_mode(argv: list[str]) -> str:
    """``[DEFAULT] concurrency_mode`` as the config files set it (last wins)."""
    mode = 'threading'
    for path in _config_files(argv):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(path)
        except configparser.Error:
            continue  # oslo.config reports the file properly later
        mode = parser.defaults().get('concurrency_mode', mode).strip() or mode
    return mode


def bootstrap() -> None:
    """Select the concurrency mode before the agent's modules are imported."""
    from agentkit import concurrency
    mode = early_concurrency_mode(sys.argv[1:])
    if mode in ('threading', 'eventlet'):
        concurrency.select(mode)
    # Anything else is left to oslo.config, which rejects it with a message.
