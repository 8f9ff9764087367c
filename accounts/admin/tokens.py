"""Hugging Face tokens and model prices in the admin.

A token's value is write-only: typed into a password field, stored encrypted, shown only
masked. A price added or edited here is the admin's own (custom): refreshing from the router
leaves it alone.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from accounts import permissions, selectors, services, validators
from accounts.admin.display import ListsFitMedia, timestamp, when
from accounts.models import HuggingFaceToken, ModelPrice


class HuggingFaceTokenForm(forms.ModelForm):
    value = forms.CharField(
        label="Token",
        required=False,
        # Never rendered back, not even after a failed submission.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    actor = None  # the staff user filling it in (the admin's get_form)

    class Meta:
        model = HuggingFaceToken
        fields = ("name", "owner", "value")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        owner = self.fields.get("owner")
        if owner is not None and self.instance.owner_id is not None:  # it may stay whose it is
            owner.queryset = owner.queryset | owner.queryset.model.objects.filter(pk=self.instance.owner_id)
        if self.instance.pk is None:
            self.fields["value"].required = True
            self.fields["value"].help_text = "Stored encrypted; shown only masked from now on."
        else:
            self.fields[
                "value"
            ].help_text = f"Leave empty to keep the current token ({self.instance.masked}). Stored encrypted."

    def clean_value(self) -> str:
        value = self.cleaned_data["value"]
        return validators.hf_token_value(value) if value else ""

    def clean_owner(self):
        owner = self.cleaned_data["owner"]
        # The service's rules, here so that they are form errors rather than a 500. (The
        # instance still has its stored owner: the form sets the new one after cleaning.)
        permissions.check_token_owner(actor=self.actor, hf_token=self.instance, owner=owner)
        services.hf_token_check_new_owner(hf_token=self.instance, owner=owner)
        return owner


@admin.register(HuggingFaceToken)
class HuggingFaceTokenAdmin(admin.ModelAdmin):
    form = HuggingFaceTokenForm
    list_display = ("name", "owner_or_shared", "masked", "keys_using", "rejected", "created")
    list_select_related = ("owner",)
    search_fields = ("name", "owner__username")
    readonly_fields = ("masked", "created")
    Media = ListsFitMedia

    created = timestamp("created_at", "created")

    def get_fields(self, request, obj=None):
        return ("name", "owner", "value") if obj is None else ("name", "owner", "masked", "value", "created")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.actor = request.user
        return form

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":  # and empty: shared
            kwargs["queryset"] = permissions.key_users(request.user, creating=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[HuggingFaceToken]:
        return (
            super()
            .get_queryset(request)
            .annotate(keys_using=Count("api_keys"), rejected_at=selectors.last_rejection())
            .annotate(worked_since=selectors.worked_since("rejected_at"))
        )

    @admin.display(description="rejected by Hugging Face", ordering="rejected_at")
    def rejected(self, token: HuggingFaceToken) -> str:
        """The last 401 the router gave this token since its value was set, unless a request
        with it has succeeded since: replace it."""
        if token.rejected_at is None or token.worked_since:
            return "-"
        return format_html(
            '<strong class="errornote">at {}: replace its value</strong>', when(token.rejected_at)
        )

    @admin.display(description="owner", ordering="owner__username")
    def owner_or_shared(self, token: HuggingFaceToken) -> str:
        return token.owner.get_username() if token.owner_id else "shared"

    @admin.display(description="token")
    def masked(self, token: HuggingFaceToken) -> str:
        return token.masked

    @admin.display(description="keys using it", ordering="keys_using")
    def keys_using(self, token: HuggingFaceToken) -> int:
        return token.keys_using

    def save_model(self, request, obj: HuggingFaceToken, form, change: bool) -> None:
        services.hf_token_save(hf_token=obj, value=form.cleaned_data.get("value", ""), actor=request.user)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices from the router's list (`manage.py refresh_prices`), and custom ones."""

    list_display = (
        "model",
        "provider",
        "input_per_million",
        "output_per_million",
        "cached_input_per_million",
        "unit",
        "per_unit",
        "source",
        "updated",
    )
    list_filter = ("source", "unit", "provider")
    search_fields = ("model", "provider")
    readonly_fields = ("source", "updated")
    Media = ListsFitMedia

    updated = timestamp("updated_at", "updated")

    def save_model(self, request, obj: ModelPrice, form, change: bool) -> None:
        services.model_price_save(price=obj)

    def delete_model(self, request, obj: ModelPrice) -> None:
        services.model_prices_delete(model_prices=ModelPrice.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset: QuerySet[ModelPrice]) -> None:
        services.model_prices_delete(model_prices=queryset)
