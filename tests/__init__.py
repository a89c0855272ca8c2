"""agentkit's tests: ``unit`` (no host changes) and ``functional`` (real kernel,
OVS, RabbitMQ, dnsmasq). Threads are selected before anything imports
oslo.messaging, exactly as the agents do at start."""

from agentkit import concurrency

concurrency.select()
