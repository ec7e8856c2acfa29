"""Offline tools: render, mock runtime, relock, config docs (never evaluated by `pulumi up`)."""
