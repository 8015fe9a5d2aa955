"""Credentials for providers: auth profiles, API-key connection, OpenAI OAuth, refresh."""
