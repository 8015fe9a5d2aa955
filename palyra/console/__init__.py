"""The web console's assets (HTML, JS, CSS), served by the daemon; nothing from a CDN."""
