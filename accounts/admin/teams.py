"""Teams and their members: the team's budgets, caps per member, token and bill-to."""

from __future__ import annotations

from django.contrib import admin

from accounts import services
from accounts.models import Team, TeamMember


class MemberInline(admin.TabularInline):
    model = TeamMember
    extra = 1
    autocomplete_fields = ("user",)
    fields = ("user", "role", "added_at")
    readonly_fields = ("added_at",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "token_budget", "usd_budget", "member_rpm", "bill_to", "members_count")
    search_fields = ("name", "bill_to")
    inlines = [MemberInline]
    fieldsets = (
        (None, {"fields": ("name", "hf_token", "bill_to", "allowed_models")}),
        ("Monthly budgets of the whole team", {"fields": ("token_budget", "usd_budget")}),
        (
            "Caps per member",
            {"fields": ("member_rpm", "member_tpm", "member_token_budget", "member_usd_budget")},
        ),
    )

    @admin.display(description="members")
    def members_count(self, team: Team) -> int:
        return team.members.count()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "hf_token":  # a team calls with a shared token, never someone's own
            from accounts.models import HuggingFaceToken

            kwargs["queryset"] = HuggingFaceToken.objects.filter(owner__isnull=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj: Team, form, change: bool) -> None:
        # Through the services: limits changed here apply to the team's keys at once, and the
        # audit trail has it.
        if change:
            services.team_update(team=obj, actor=request.user)
        else:
            fields = {name: getattr(obj, name) for name in form.cleaned_data if name != "name"}
            created = services.team_create(name=obj.name, actor=request.user, **fields)
            obj.pk, obj._state.adding, obj._state.db = created.pk, False, created._state.db

    def save_formset(self, request, form, formset, change: bool) -> None:
        for member in formset.save(commit=False):
            services.team_member_add(
                team=form.instance,
                user=member.user,
                admin=member.role == TeamMember.Role.ADMIN,
                actor=request.user,
            )
        for member in formset.deleted_objects:
            services.team_member_remove(team=form.instance, user=member.user, actor=request.user)
