"""The one configuration verdict: the settings' own checks and every check a component makes when the app starts
(plans file and bridge schema registry, local accounts, order e-mails), run together before any command touches a
database. `gateway check-config` prints it; `serve`, `migrate` and every other command refuse to run without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.accounts.tokens import local_auth_problems
from gateway.bridge import boot as bridge_boot
from gateway.notifications.order_emails import EmailConfig
from gateway.settings import ConfigError, Settings, read_settings


def component_problems(settings: Settings) -> list[str]:
    """What the app's components would refuse at boot (each check is the component's own)."""
    problems: list[str] = []
    try:
        bridge_boot.check(settings.plans_file)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if settings.auth_local_enabled:
        problems.extend(local_auth_problems(settings))
    if settings.smtp_url:
        try:
            EmailConfig.from_settings(settings)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def checked_settings(
    environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, str] | None = None
) -> Settings:
    """The settings (environment, .env file, then `overrides`), or ConfigError listing every problem."""
    settings, problems = read_settings(environ, overrides=overrides)
    problems.extend(component_problems(settings))
    if problems:
        raise ConfigError(problems)
    return settings
