"""agentkit: host-side network agents for OpenStack Neutron.

The package is deliberately import-light: selecting the concurrency backend
(threads by default, eventlet on request) must happen before oslo.messaging
is imported, so nothing here imports it.
"""
