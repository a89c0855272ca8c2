"""Version of the installed agentkit distribution (from pbr metadata)."""

import pbr.version

version_info = pbr.version.VersionInfo('agentkit')
