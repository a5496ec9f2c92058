"""Who the caller is (API keys, JWTs) and what it may do; installed on the app by `install_auth`."""
