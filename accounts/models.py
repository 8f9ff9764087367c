"""Keys, Hugging Face tokens and usage records.

Secrets never sit in a column in the clear: an API key is kept as its SHA-256 digest (it has
128+ bits of randomness, so a plain digest cannot be reversed), a Hugging Face token encrypted.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from accounts import crypto


class HuggingFaceTokenQuerySet(models.QuerySet):
    def usable_by(self, users) -> HuggingFaceTokenQuerySet:
        """The tokens keys of `users` (users or their ids) may call with: shared ones and their
        own. A personal token is its owner's alone: a key calling with it spends their quota
        and acts as them upstream."""
        return self.filter(Q(owner__isnull=True) | Q(owner__in=users))


class HuggingFaceToken(models.Model):
    """A Hugging Face access token: personal (an owner) or shared by the team (no owner)."""

    name = models.CharField(max_length=100, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="hf_tokens",
        help_text="Leave empty for a shared team token.",
    )
    encrypted_value = models.TextField(editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Hugging Face's rejections of the token count from here: a new value starts afresh.
    value_set_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = HuggingFaceTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "Hugging Face token"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"hf_…{self.last4}"

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None

    def set_value(self, plaintext: str) -> None:
        self.encrypted_value = crypto.encrypt(plaintext)
        self.last4 = plaintext[-4:]
        self.value_set_at = timezone.now()

    def value(self) -> str:
        """The token in the clear; `crypto.DecryptionError` when the keys do not fit."""
        return crypto.decrypt(self.encrypted_value)


class ModelPrice(models.Model):
    """What a model costs on a provider, in USD per million tokens: from the router's model list
    (`manage.py refresh_prices`, and every PRICES_REFRESH_INTERVAL), or set by an admin (a
    custom price, which refreshing never overwrites). Models not counted in tokens (images,
    speech) are priced per unit: per image generated, per second of audio."""

    class Source(models.TextChoices):
        ROUTER = "router", "the router's list"
        CUSTOM = "custom", "set by an admin"

    class Unit(models.TextChoices):
        TOKENS = "tokens", "per million tokens"
        IMAGES = "images", "per image"
        SECONDS = "seconds", "per second of audio"

    model = models.CharField(max_length=200, help_text="The model id, without a provider suffix.")
    provider = models.CharField(max_length=64)
    input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, verbose_name="input, USD / 1M tokens"
    )
    output_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, verbose_name="output, USD / 1M tokens"
    )
    cached_input_per_million = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        verbose_name="cached input, USD / 1M tokens",
        help_text="Prompt tokens read from the provider's cache; empty: billed as input.",
    )
    unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.TOKENS)
    per_unit = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        verbose_name="USD per unit",
        help_text="For images and audio: USD per image, or per second of audio.",
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.CUSTOM)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "provider"]
        constraints = [
            models.UniqueConstraint(fields=["model", "provider"], name="one_price_a_model_and_provider")
        ]

    def __str__(self) -> str:
        return f"{self.model} on {self.provider}"


def _count(verbose_name: str | None = None, help_text: str = "", big: bool = False) -> models.Field:
    """An optional limit in requests or tokens (empty: none)."""
    kind = models.PositiveBigIntegerField if big else models.PositiveIntegerField
    return kind(null=True, blank=True, verbose_name=verbose_name, help_text=help_text)


def _dollars(verbose_name: str, help_text: str = "") -> models.DecimalField:
    """An optional budget in US dollars (empty: none)."""
    return models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        verbose_name=verbose_name,
        help_text=help_text,
    )


class Limits(models.Model):
    """Limits a key carries, or a user's defaults for keys that carry none. Empty: no limit."""

    rpm = _count("requests per minute")
    tpm = _count("tokens per minute")
    token_budget = _count("monthly token budget", "Tokens per calendar month (UTC).", big=True)
    lifetime_token_budget = _count(big=True)
    usd_budget = _dollars(
        "monthly budget (USD)", "US dollars per calendar month (UTC), at the recorded prices."
    )
    max_parallel = _count("concurrent requests")

    LIMIT_FIELDS = ("rpm", "tpm", "token_budget", "lifetime_token_budget", "usd_budget", "max_parallel")

    class Meta:
        abstract = True


class Team(models.Model):
    """People sharing a budget: their keys on the team count against its monthly budgets, and
    each member against the team's caps per member, besides the key's own limits."""

    name = models.CharField(max_length=100, unique=True)
    token_budget = _count("monthly token budget", "The whole team's, per calendar month (UTC).", big=True)
    usd_budget = _dollars("monthly budget (USD)", "The whole team's US dollars per calendar month (UTC).")
    member_rpm = _count("requests per minute, per member")
    member_tpm = _count("tokens per minute, per member")
    member_token_budget = _count("monthly token budget, per member", big=True)
    member_usd_budget = _dollars("monthly budget (USD), per member")
    allowed_models = models.TextField(
        blank=True,
        verbose_name="allowed models",
        help_text="For the team's keys that list none of their own. Empty: the user's list, else any.",
    )
    hf_token = models.ForeignKey(
        HuggingFaceToken,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="teams",
        verbose_name="Hugging Face token",
        help_text="A shared token the team's keys call with when they name none. Empty: HF_TOKEN.",
    )
    bill_to = models.CharField(
        max_length=100,
        blank=True,
        verbose_name="bill to",
        help_text="A Hugging Face organisation the router bills for the team's requests (X-HF-Bill-To).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.hf_token_id is not None and self.hf_token.owner_id is not None:
            raise ValidationError({"hf_token": "A team calls with a shared token, not someone's own."})


class TeamMember(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "member"
        ADMIN = "admin", "team admin"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "team member"
        ordering = ["team", "user"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_a_team_and_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class TeamInvitation(models.Model):
    """Someone asked to join a team by their email address: they become a member when they
    sign in with that address verified (and may sign up with it, whatever the sign-up rules)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=8, choices=TeamMember.Role.choices, default=TeamMember.Role.MEMBER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "team invitation"
        ordering = ["team", "email"]
        constraints = [
            models.UniqueConstraint(
                "team",
                Lower("email"),
                condition=Q(accepted_at__isnull=True),
                name="one_open_invitation_a_team_and_email",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.team}"


class ApiKeyQuerySet(models.QuerySet):
    def active(self, now=None) -> ApiKeyQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class ApiKey(Limits):
    """A user's key to the gateway. The key itself is shown once and kept only as a digest."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hf_token = models.ForeignKey(
        HuggingFaceToken,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        verbose_name="Hugging Face token",
        help_text="Empty: the server's HF_TOKEN.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.TextField(
        blank=True,
        verbose_name="allowed models",
        help_text="Model ids or * patterns, comma- or line-separated. Empty: the user's list, else any.",
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="One of the user's teams: its requests count against the team's limits too.",
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        permissions = [("add_apikey_for_others", "Can add API keys for other users")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    def clean(self) -> None:
        if (
            self.team_id is not None
            and self.user_id is not None
            and not TeamMember.objects.filter(team_id=self.team_id, user_id=self.user_id).exists()
        ):
            raise ValidationError({"team": f"{self.user} is not a member of the team {self.team}."})
        if self.hf_token_id is None or self.user_id is None:
            return
        if not HuggingFaceToken.objects.filter(pk=self.hf_token_id).usable_by([self.user_id]).exists():
            raise ValidationError(
                {"hf_token": f"The Hugging Face token {self.hf_token.name!r} belongs to another user."}
            )

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class UserPolicy(Limits):
    """Defaults for a user's keys that set none of their own, and the user's own limits: caps
    on all of their keys together (`total_*`), checked in the same admission as each key's."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="policy")
    total_rpm = _count("requests per minute, all keys together")
    total_tpm = _count("tokens per minute, all keys together")
    total_token_budget = _count("monthly token budget, all keys together", big=True)
    total_usd_budget = _dollars("monthly budget (USD), all keys together")
    allowed_models = models.TextField(
        blank=True,
        verbose_name="allowed models",
        help_text="Model ids or * patterns, comma- or line-separated. Empty: any model.",
    )

    class Meta:
        verbose_name = "user policy"
        verbose_name_plural = "user policies"

    def __str__(self) -> str:
        return f"policy of {self.user}"


class Outcome(models.TextChoices):
    OK = "ok", "ok"
    BAD_REQUEST = "bad_request", "bad request"
    UPSTREAM_ERROR = "upstream_error", "upstream error"
    CLIENT_DISCONNECTED = "client_disconnected", "client disconnected"
    TIMEOUT = "timeout", "timeout"
    REFUSED = "refused", "refused by policy"
    PROXY_ERROR = "proxy_error", "proxy error"


class UsageSource(models.TextChoices):
    PROVIDER = "provider", "from the provider"
    ESTIMATED = "estimated", "estimated"
    MISSING = "missing", "missing"


# The error code of a request whose Hugging Face token the router refused (gateway.errors).
REJECTED_TOKEN = "upstream_auth_failed"


class UsageRecord(models.Model):
    """One request that passed authentication, however it ended."""

    # Made by the gateway, so a retried batch insert cannot write a record twice.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=128)
    # Not indexed alone: the composite indexes below lead with them.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage", db_index=False)
    # The key's team when the request was made (a key's team may change), and whom the router
    # was asked to bill.
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    bill_to = models.CharField(max_length=100, blank=True)
    # No constraint: deleting a token must not scan this table, nor can a request still in
    # flight with a token deleted meanwhile make its record unwritable. Indexed only where the
    # router rejected the token (below): what the admin looks for.
    hf_token = models.ForeignKey(
        HuggingFaceToken,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="usage",
        db_index=False,
        verbose_name="Hugging Face token",
        help_text="The token the request went upstream with; empty: the server's HF_TOKEN (or none).",
    )
    upstream_attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Calls to the router: 2 when a failed connection or a 5xx was retried."
    )
    provider = models.CharField(
        max_length=64, blank=True, help_text="The provider that answered, when the router said so."
    )
    # The price used (USD per million tokens) and what the request cost by it.
    price_input = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    price_output = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cost_usd = models.DecimalField(
        max_digits=16, decimal_places=8, null=True, blank=True, verbose_name="cost (USD)"
    )
    endpoint = models.CharField(max_length=40)
    model_requested = models.CharField(max_length=200, blank=True)
    model_answered = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    error_code = models.CharField(max_length=40, blank=True, help_text="The error's `code`, if it failed.")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Parts of the counts above, when the provider reported them: prompt tokens read from its
    # prompt cache (billed at the cached price where one is listed), completion tokens spent
    # reasoning.
    cached_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Of the prompt tokens, those read from the provider's cache."
    )
    reasoning_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Of the completion tokens, those spent reasoning."
    )
    # What endpoints not counted in tokens used: images generated, seconds of audio transcribed.
    units = models.DecimalField(
        max_digits=14,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Images generated, or seconds of audio: for endpoints not counted in tokens.",
    )
    usage_source = models.CharField(max_length=12, choices=UsageSource.choices)
    latency_ms = models.PositiveIntegerField()
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, verbose_name="time to first token (ms)")

    class Meta:
        ordering = ["-created_at"]
        # Each index leads with what a query filters or groups on and carries the columns it
        # counts and sums, so the dashboard and the key list read indexes only, never sorting a
        # period's rows (bench/dashboard.py measures it).
        indexes = [
            models.Index(fields=["created_at", "outcome", "total_tokens", "ttft_ms", "cost_usd"]),
            models.Index(fields=["user", "created_at", "outcome", "total_tokens", "cost_usd"]),
            models.Index(fields=["api_key", "created_at", "total_tokens", "cost_usd"]),
            models.Index(fields=["team", "created_at", "user", "total_tokens", "cost_usd"]),
            models.Index(fields=["model_requested", "created_at", "outcome", "total_tokens", "cost_usd"]),
            models.Index(fields=["outcome", "created_at"]),
            models.Index(
                fields=["hf_token", "created_at"],
                condition=Q(error_code=REJECTED_TOKEN),
                name="usage_rejected_token",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(total_tokens__isnull=True) | Q(usage_source__in=["provider", "estimated"]),
                name="usage_tokens_have_a_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model_requested} {self.outcome}"


class UsageRollup(models.Model):
    """Usage records summed per hour and per day (`span`), per key, user, team, endpoint, model
    and outcome: what the dashboard, the reports, the API, the portal and budget seeding read
    instead of the records (accounts.rollups). Maintained by the database itself, in the
    transaction that inserts the records (a trigger: migration 0011), so the sums are exact
    whoever writes; pruning records leaves them as they are."""

    class Span(models.TextChoices):
        HOUR = "h", "hour"
        DAY = "d", "day"
        # Every key's usage, per team and outcome only (no key, user, endpoint or model):
        # what the dashboard's series read (migration 0013).
        TOTAL_HOUR = "H", "hour, every key"
        TOTAL_DAY = "D", "day, every key"

    span = models.CharField(max_length=1, choices=Span.choices)
    start = models.DateTimeField(help_text="The hour's or the day's first instant (UTC).")
    # No constraints: a rollup outlives its records, and checking them would cost every insert.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        db_index=False,
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+", db_index=False
    )
    team_id = models.PositiveIntegerField(default=0, help_text="The record's team; 0: none.")
    endpoint = models.CharField(max_length=40)
    model_requested = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    requests = models.PositiveBigIntegerField(default=0)
    streams = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    units = models.DecimalField(max_digits=20, decimal_places=3, default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0, verbose_name="cost (USD)")
    # Sums, for averages: milliseconds of latency, and of time to first token over `with_ttft`.
    latency_ms = models.PositiveBigIntegerField(default=0)
    ttft_ms = models.PositiveBigIntegerField(default=0)
    with_ttft = models.PositiveBigIntegerField(default=0)

    GROUP = ("span", "start", "api_key", "user", "team_id", "endpoint", "model_requested", "outcome")

    class Meta:
        verbose_name = "usage rollup"
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "span",
                    "start",
                    "api_key",
                    "user",
                    "team_id",
                    "endpoint",
                    "model_requested",
                    "outcome",
                ],
                name="usage_rollup_one_row_a_group",
            ),
        ]
        indexes = [
            models.Index(fields=["span", "user", "start"], name="usage_rollup_user"),
            models.Index(fields=["span", "team_id", "start"], name="usage_rollup_team"),
            models.Index(fields=["span", "api_key", "start"], name="usage_rollup_key"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.start:%Y-%m-%d %H:%M} {self.span} {self.model_requested} {self.outcome}: {self.requests}"
        )


# Buckets a UsageHistogram row counts: a band of 24, each 10^(1/24) (10 %) wider than the last.
HISTOGRAM_BAND = 24


class UsageHistogram(models.Model):
    """Latencies and times to first token counted per hour and per day (`span`) and team, in
    log-spaced buckets (accounts.histograms): what the dashboard's percentiles read instead of
    the records. Kept like the rollups, by a trigger in the inserting transaction (migration
    0012), and left as they are by pruning. A row holds HISTOGRAM_BAND neighbouring buckets,
    `band` × HISTOGRAM_BAND + 0 … 23: a batch of records touches a few rows, not one per bucket."""

    class Metric(models.TextChoices):
        LATENCY = "latency_ms", "latency"
        TTFT = "ttft_ms", "time to first token"

    span = models.CharField(max_length=1, choices=UsageRollup.Span.choices[:2])
    start = models.DateTimeField(help_text="The hour's or the day's first instant (UTC).")
    team_id = models.PositiveIntegerField(default=0, help_text="The record's team; 0: none.")
    metric = models.CharField(max_length=10, choices=Metric.choices)
    band = models.PositiveSmallIntegerField()
    # b0 … b23: the records in each bucket of the band. Named in a loop: 24 lines that differ
    # only by a digit would say less.
    for _position in range(HISTOGRAM_BAND):
        locals()[f"b{_position}"] = models.PositiveBigIntegerField(default=0)
    del _position

    class Meta:
        verbose_name = "usage histogram"
        constraints = [
            models.UniqueConstraint(
                fields=["span", "start", "team_id", "metric", "band"], name="usage_histogram_one_row_a_band"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} {self.span} {self.metric} band {self.band}"


class AuditEntry(models.Model):
    """One event of the audit trail (accounts.audit): never a secret."""

    class Action(models.TextChoices):
        KEY_CREATED = "key_created", "key created"
        KEY_REVOKED = "key_revoked", "key revoked"
        KEY_CHANGED = "key_changed", "key changed"
        USER_LIMITS_CHANGED = "user_limits_changed", "a user's limits changed"
        TEAM_CREATED = "team_created", "team created"
        TEAM_CHANGED = "team_changed", "team changed"
        MEMBER_ADDED = "member_added", "member added"
        MEMBER_REMOVED = "member_removed", "member removed"
        MEMBER_INVITED = "member_invited", "member invited"
        INVITATION_CANCELLED = "invitation_cancelled", "invitation cancelled"
        SIGNED_IN = "signed_in", "signed in"
        SIGN_IN_FAILED = "sign_in_failed", "sign-in failed"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept should the user go.")
    action = models.CharField(max_length=20, choices=Action.choices)
    target = models.CharField(max_length=200, blank=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    detail = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=100, blank=True, help_text="The client's address, or manage.py.")

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        ordering = ["-at"]
        indexes = [models.Index(fields=["team", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name or '-'} {self.action} {self.target}"


class AlertSent(models.Model):
    """An alert (accounts.alerts), by what makes it one: claimed, then sent once."""

    key = models.CharField(max_length=200, unique=True)
    text = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "alert"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text
