"""eventray's test kit: loopback stand-ins for the outside world, importable by users.

Installed as ``eventray.testing`` (like ``bytewax.testing`` or ``temporalio.testing``): a
loopback webhook sink and SMTP server that trigger deliveries can reach, a device simulator and
an HTTP traffic generator for the ingress, and an HTTP stand-in that speaks ClickHouse's HTTP
interface over chDB for the clickhouse-connect adapter's tests (no ClickHouse server installs
on the development machine). None of it is product code: the stack never imports it except
``eventray demo``, which needs sinks and devices to show the pipeline working.
"""
