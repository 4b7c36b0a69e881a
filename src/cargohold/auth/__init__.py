"""Security: TLS material, logins (htpasswd), bearer tokens, the access policy.

- :mod:`.htpasswd`  registry:2-compatible bcrypt htpasswd files, cached and throttled checks
- :mod:`.tokens`    Docker registry token spec: verify bearer JWTs, issue them (built-in server)
- :mod:`.policy`    the ``access:`` policy: who may pull, push, delete which repositories
- :mod:`.middleware` the aiohttp middleware and the ``/auth/token`` endpoint
- :mod:`.certs`     a private CA, server and client certificates (``cargohold cert``)
- :mod:`.commands`  the ``cert`` and ``htpasswd`` subcommands
- :mod:`.accesslog` the access log line, with secrets in query strings redacted

Without an ``auth`` section none of this runs and the registry is open, as registry:2's is.
"""
