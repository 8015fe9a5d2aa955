"""The daemon's HTTP surface (aiohttp)."""
