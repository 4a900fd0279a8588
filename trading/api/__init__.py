"""The trading part of the bot API (BOT_API.md): markets, assets, orders, fills."""
