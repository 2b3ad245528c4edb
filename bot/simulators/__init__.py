"""Local stand-ins for Slack's Web API, the Bot Framework connector and the pagers.

They are product code: ``ithelp demo`` plays a day on them, ``bench/`` measures against them and the tests use
them as the network edge. Each speaks the real wire format (Slack's signed requests and Web API, Bot Framework
activities, PagerDuty/Opsgenie/webhook events) over real HTTP on loopback.
"""
