"""The device API (`docs/device-api.md`): the HTTPS service enrolled phones talk to.

Functional core (`signing`, `codes`, `limits`, `settings`: pure) and a thin aiohttp shell (`transport`, `server`,
`tls`). The service reaches the rest of the product only through the `ports.DeviceDirectory` protocol.
"""
