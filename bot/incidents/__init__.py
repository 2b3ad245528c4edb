"""Outages: many reports, one incident, one voice to everyone affected (issue #20)."""

from bot.incidents.intake import IncidentIntake
from bot.incidents.service import IncidentService
from bot.incidents.ticket_card import incident_part
from bot.incidents.updates import IncidentUpdates

__all__ = ["IncidentIntake", "IncidentService", "IncidentUpdates", "incident_part"]
