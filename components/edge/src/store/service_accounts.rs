//! `service_accounts`: OAuth2 client-credentials accounts with Argon2id secrets.
