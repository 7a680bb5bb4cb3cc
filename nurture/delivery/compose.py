"""From a subscriber and a step to a ready-to-send message: context, links, render, build."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nurture.content.rendering import Rendered, SubscriberView, renderer_for
from nurture.content.sequences import Sequence, Step
from nurture.content.topics import topic_of, topics_for
from nurture.delivery.dkim import signer_for
from nurture.delivery.links import add_open_pixel, link_rewriter, open_url
from nurture.delivery.mime import Envelope, build_message
from nurture.errors import ConfigError
from nurture.settings import Settings
from nurture.store.enums import DeliveryKind
from nurture.tokens import Purpose, link, subscriber_payload

CONFIRM_TEMPLATE = "_system/confirm"
CONFIRM_SUBJECT = "Please confirm your subscription"


@dataclass(frozen=True)
class Composed:
    rendered: Rendered
    envelope: Envelope


def sender_for(settings: Settings, seq: Sequence | None = None) -> str:
    sender = (seq.sender if seq else None) or settings.sender
    if not sender:
        raise ConfigError("NURTURE_FROM is not set: say who the emails are from, "
                          "e.g. NURTURE_FROM='Crumb & Co <hello@crumb.example>'")  # fmt: skip
    return sender


def unsubscribe_url(
    settings: Settings, subscriber_id: int, sequence: str | None, key: str,
    topic: str | None = None,
) -> str:  # fmt: skip
    return link(settings.base_url, settings.secret_key, Purpose.UNSUBSCRIBE,
                subscriber_payload(subscriber_id, key, sequence, topic))  # fmt: skip


@dataclass(frozen=True)
class MailingList:
    """The list an email belongs to: its `List-Id` (id and name) and, with topics on,
    the topic its unsubscribe link names for the preference centre."""

    id: str
    name: str
    topic: str | None = None

    @classmethod
    def of(cls, settings: Settings, topic: str, list_id: str, name: str) -> MailingList:
        """The topic's list when topics are on; else the list (list_id, name) of old."""
        topics = topics_for(settings.workspace)
        return cls(topic, topics.label(topic), topic) if topics.on else cls(list_id, name)


def confirm_url(settings: Settings, subscriber_id: int, key: str) -> str:
    """The double opt-in link: it expires (tokens.MAX_AGE), and holds only for the
    subscriber's current link key."""
    return link(settings.base_url, settings.secret_key, Purpose.CONFIRM,
                subscriber_payload(subscriber_id, key))  # fmt: skip


def brand(sender: str) -> str:
    name = sender.split("<")[0].strip().strip('"')
    return name or sender


def compose_step(
    settings: Settings,
    seq: Sequence,
    step: Step,
    subscriber: SubscriberView,
    subscriber_id: int,
    delivery_id: int | None = None,
) -> Composed:
    sender = sender_for(settings, seq)
    listed = MailingList.of(settings, topic_of(seq), seq.name, seq.name)
    unsub = unsubscribe_url(settings, subscriber_id, seq.name, subscriber.link_key, listed.topic)
    context: dict[str, Any] = {
        "subscriber": subscriber,
        "sequence": {"name": seq.name},
        "step": {"id": step.id, "subject": step.subject, "stage": str(step.stage)},
        "unsubscribe_url": unsub,
        "postal_address": settings.postal_address or "",
    }
    # Links become signed /c/ redirects and a pixel reports opens, for a real delivery
    # only (not a preview) and unless NURTURE_TRACKING=off.
    rewrite = link_rewriter(settings, delivery_id)
    renderer = renderer_for(settings.templates_dir)
    preheader = renderer.render_line(step.preheader, context) if step.preheader else ""
    rendered = renderer.render(step.template, step.subject, context, brand=brand(sender),
                               preheader=preheader, rewrite_link=rewrite)  # fmt: skip
    if rewrite is not None and delivery_id is not None:
        pixel = open_url(settings, delivery_id)
        rendered = replace(rendered, html=add_open_pixel(rendered.html, pixel))
    envelope = build_message(
        sender=sender, to=subscriber.email, subject=rendered.subject, html=rendered.html,
        text=rendered.text, list_id=listed.id, list_name=listed.name, unsubscribe_url=unsub,
        feedback=(step.id, seq.name, DeliveryKind.SEQUENCE), signer=signer_for(settings),
    )  # fmt: skip
    return Composed(rendered, envelope)


def compose_confirmation(
    settings: Settings, subscriber: SubscriberView, subscriber_id: int
) -> Composed:
    sender = sender_for(settings)
    unsub = unsubscribe_url(settings, subscriber_id, None, subscriber.link_key)
    context: dict[str, Any] = {
        "subscriber": subscriber,
        "confirm_url": confirm_url(settings, subscriber_id, subscriber.link_key),
        "unsubscribe_url": unsub,
        "postal_address": settings.postal_address or "",
    }
    rendered = renderer_for(settings.templates_dir).render(
        CONFIRM_TEMPLATE, CONFIRM_SUBJECT, context, brand=brand(sender)
    )
    envelope = build_message(
        sender=sender, to=subscriber.email, subject=rendered.subject, html=rendered.html,
        text=rendered.text, list_id="confirm", list_name="Subscription confirmation",
        unsubscribe_url=unsub, feedback=("optin", "subscription", DeliveryKind.CONFIRM),
        signer=signer_for(settings),
    )  # fmt: skip
    return Composed(rendered, envelope)
