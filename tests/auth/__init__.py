"""Security: TLS, logins, tokens, the access policy (issue 3)."""
