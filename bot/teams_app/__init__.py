"""The Teams app files shipped with ithelp: manifest.json (with ``{{APP_ID}}``/``{{BOT_DOMAIN}}`` placeholders) and
its two icons, read by ``ithelp teams-package`` from the installed package."""
