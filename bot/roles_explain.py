"""``ithelp check-config --explain``: who may act on tickets, in words.

Two kinds of people can press buttons on the desk's cards: **agents** (``agents:`` in ``app.yaml``), who work
tickets, and **paged people** (escalation chain targets that are not agents), who may only acknowledge the pages
of the tickets they were paged about. The rules themselves live in ``bot.escalation`` (acknowledge) and the ticket
service (everything else); this module only says them for the file at hand.
"""

from __future__ import annotations

from bot.config import AppConfig

_PAGERS = ("pagerduty", "opsgenie", "webhook")


def _agents(config: AppConfig) -> list[str]:
    agents = config.agents
    return ([f"slack:user:{user}" for user in agents.slack_users]
            + [f"members of Slack user group {group} (read from Slack every 10 minutes)"
               for group in agents.slack_usergroups]
            + [f"teams:user:{user}" for user in agents.teams_users])


def _is_agent(config: AppConfig, target: str) -> bool:
    kind, _, rest = target.partition(":")
    sub, _, ident = rest.partition(":")
    if sub != "user":
        return False
    return ident in (config.agents.slack_users if kind == "slack" else config.agents.teams_users)


def _paged(config: AppConfig) -> dict[str, list[str]]:
    """Every escalation target (leads resolved) with where it is paged: ``{target: ["chain oncall, level 1", …]}``."""
    found: dict[str, list[str]] = {}
    for name, chain in config.escalation.chains.items():
        for index, level in enumerate(chain.levels):
            where = f"chain {name}, level {index + 1}"
            for target in level.notify:
                targets = sorted(set(config.agents.leads.values())) if target == "lead" else [target]
                for one in targets:
                    found.setdefault(one, []).append(where)
    return found


def explain_roles(config: AppConfig) -> list[str]:
    """Lines saying who may act on tickets under ``config``: agents, paged people and channels, everyone else."""
    lines = ["Who may act on tickets:"]
    agents = _agents(config)
    if agents:
        lines.append("  Agents (agents: in app.yaml) may claim, start, put on hold, re-prioritise, resolve and reopen "
                     "tickets from the triage card, and acknowledge any page: " + ", ".join(agents) + ".")
    else:
        lines.append("  Agents: none listed under agents:, so nobody can work tickets from the triage card; add "
                     "agents.slack_users, agents.slack_usergroups or agents.teams_users.")
    paged = _paged(config)
    people = {t: w for t, w in paged.items() if t.split(":")[1:2] == ["user"] and not _is_agent(config, t)}
    channels = {t: w for t, w in paged.items() if t.split(":")[1:2] == ["channel"]}
    groups = {t: w for t, w in paged.items() if t.split(":")[1:2] == ["usergroup"]}
    pagers = {t: w for t, w in paged.items() if t.split(":")[0] in _PAGERS}
    if people:
        lines.append("  Paged people who are not agents may acknowledge the pages of a ticket they were paged about "
                     "(their Claim button acknowledges without taking the ticket) and nothing else:")
        lines.extend(f"    {target} ({'; '.join(where)})" for target, where in sorted(people.items()))
    if channels:
        lines.append("  Paged channels: anyone who presses Acknowledge on the page in that channel may acknowledge "
                     "it (and nothing else, unless they are an agent):")
        lines.extend(f"    {target} ({'; '.join(where)})" for target, where in sorted(channels.items()))
    if groups:
        lines.append("  Slack user groups are paged in the triage channel by mention; only their members who are "
                     "agents may acknowledge there:")
        lines.extend(f"    {target} ({'; '.join(where)})" for target, where in sorted(groups.items()))
    if "assignee" in paged:
        lines.append("  assignee (" + "; ".join(paged["assignee"]) + ") is the agent working the ticket.")
    if pagers:
        lines.append("  Pager services are told when a page starts and ends; acknowledging happens in chat: "
                     + ", ".join(sorted(pagers)) + ".")
    if not paged:
        lines.append("  No escalation chain pages anyone, so only agents can act on tickets.")
    lines.append("  Everyone else may open tickets, add to their own, and answer their own surveys; any other click "
                 "is refused with a short reason.")
    return lines
