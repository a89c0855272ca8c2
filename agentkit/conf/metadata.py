"""Options of the metadata agent."""

from oslo_config import cfg

METADATA_GROUP = 'metadata'

metadata_opts = [
    cfg.HostAddressOpt(
        'nova_metadata_host', default='127.0.0.1',
        help='Host of the Nova metadata API.'),
    cfg.PortOpt(
        'nova_metadata_port', default=8775,
        help='Port of the Nova metadata API.'),
    cfg.StrOpt(
        'metadata_proxy_shared_secret', default='', secret=True,
        help='Secret shared with Nova to sign instance ids.'),
    cfg.StrOpt(
        'metadata_proxy_socket', default='$state_path/metadata_proxy',
        help='Unix socket the per-namespace proxies forward requests to.'),
]


def register_metadata_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(metadata_opts)
