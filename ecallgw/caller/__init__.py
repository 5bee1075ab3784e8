"""The caller's side (issue 14): links that share a position or follow a case, breakdown assistance.

Pure parts live here (link state, dispatch choice, page texts); the gateway's edges are
``gateway/caller_api.py`` (HTTP), ``gateway/sms.py`` (SMS webhook) and ``gateway/assistance.py``
(provider webhooks and answer timers). docs/caller.md describes the flows.
"""
