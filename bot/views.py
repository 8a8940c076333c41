"""Buttons that survive restarts (`DynamicItem`: the job id lives in the custom_id, nothing in memory).

lorabot:job:<id>:cancel        Cancel the job (owner or admin)
lorabot:job:<id>:epoch:<n>     An ephemeral link to epoch n's LoRA (anyone in the channel)
lorabot:job:<id>:pick          "Use epoch N": make an epoch the job's result (owner or admin; select menu)
lorabot:plan:<token>:confirm   Queue the planned job (the planner only; plans live in memory for 30 min)
lorabot:plan:<token>:cancel    Drop the plan
lorabot:dataset:<sha>:plan     Plan a training from an uploaded dataset (its uploader)
lorabot:dataset:<sha>:edit     A one-time caption editor link for a dataset (its owner; ephemeral)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from bot.client import LorabotBot

MAX_EPOCH_BUTTONS = 20  # 4 rows of 5; a 5th row holds Cancel (or, on the final message, the pick menu)
# Discord's cap on a select menu's options; a longer job offers its latest epochs (and /pick takes any).
MAX_PICK_OPTIONS = 25


def _bot(interaction: discord.Interaction[Any]) -> LorabotBot:
    from bot.client import LorabotBot

    client = interaction.client
    assert isinstance(client, LorabotBot)
    return client


class JobCancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lorabot:job:(?P<job_id>\d+):cancel"):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel job", style=discord.ButtonStyle.danger, custom_id=f"lorabot:job:{job_id}:cancel"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> JobCancelButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot import actions

        await actions.cancel_from_discord(_bot(interaction), interaction, self.job_id)


class JobEpochButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lorabot:job:(?P<job_id>\d+):epoch:(?P<n>\d+)"
):
    def __init__(self, job_id: int, epoch: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Get epoch {epoch}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"lorabot:job:{job_id}:epoch:{epoch}",
            )
        )
        self.job_id = job_id
        self.epoch = epoch

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> JobEpochButton:
        return cls(int(match["job_id"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot import actions

        await actions.send_lora_link(_bot(interaction), interaction, self.job_id, self.epoch)


class JobPickSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"lorabot:job:(?P<job_id>\d+):pick"):
    """The final message's "Use epoch N" menu. Its options are the epochs on offer; the choice lives in the DB."""

    def __init__(self, job_id: int, epochs: Sequence[int], picked: int | None = None) -> None:
        offered = sorted(set(epochs))[-MAX_PICK_OPTIONS:]
        super().__init__(
            discord.ui.Select(
                custom_id=f"lorabot:job:{job_id}:pick",
                placeholder="Use epoch N as the result" if picked is None else f"Result: epoch {picked}",
                options=[
                    discord.SelectOption(label=f"Use epoch {epoch}", value=str(epoch), default=epoch == picked)
                    for epoch in offered
                ],
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> JobPickSelect:
        options = item.options if isinstance(item, discord.ui.Select) else []
        return cls(int(match["job_id"]), [int(o.value) for o in options if o.value.isdigit()])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot import actions

        values = self.item.values
        choice = values[0] if values else ""
        await actions.pick_from_discord(_bot(interaction), interaction, self.job_id, choice)


class PlanButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"lorabot:plan:(?P<token>[0-9a-f]{8,32}):(?P<action>confirm|cancel)",
):
    def __init__(self, token: str, action: str, label: str | None = None) -> None:
        confirm = action == "confirm"
        super().__init__(
            discord.ui.Button(
                label=label or ("Confirm and train" if confirm else "Cancel"),
                style=discord.ButtonStyle.success if confirm else discord.ButtonStyle.secondary,
                custom_id=f"lorabot:plan:{token}:{action}",
            )
        )
        self.token = token
        self.action = action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> PlanButton:
        return cls(match["token"], match["action"])

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        from bot import actions

        return await actions.check_plan_owner(_bot(interaction), interaction, self.token)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot import actions

        if self.action == "confirm":
            await actions.confirm_plan(_bot(interaction), interaction, self.token)
        else:
            await actions.drop_plan(_bot(interaction), interaction, self.token)


class DatasetPlanButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lorabot:dataset:(?P<sha>[0-9a-f]{64}):plan"
):
    """Under an uploaded dataset's report: plan a training from it with the preset's defaults."""

    def __init__(self, sha256: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Plan a training", style=discord.ButtonStyle.primary, custom_id=f"lorabot:dataset:{sha256}:plan"
            )
        )
        self.sha256 = sha256

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> DatasetPlanButton:
        return cls(match["sha"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot import actions

        await actions.plan_stored_dataset(_bot(interaction), interaction, self.sha256)


class EditCaptionsButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lorabot:dataset:(?P<sha>[0-9a-f]{64}):edit"
):
    """Under a captioned dataset: its owner gets a one-time caption editor link (ephemeral; bot/captioning.py)."""

    def __init__(self, sha256: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Edit captions", style=discord.ButtonStyle.primary, custom_id=f"lorabot:dataset:{sha256}:edit"
            )
        )
        self.sha256 = sha256

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> EditCaptionsButton:
        return cls(match["sha"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        from bot.captioning import send_editor_link

        await send_editor_link(_bot(interaction), interaction, self.sha256)


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    JobCancelButton,
    JobEpochButton,
    JobPickSelect,
    PlanButton,
    DatasetPlanButton,
    EditCaptionsButton,
)


def plan_view(token: str, *, confirm_label: str | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(PlanButton(token, "confirm", confirm_label))
    view.add_item(PlanButton(token, "cancel"))
    return view


def job_view(
    job_id: int,
    *,
    epochs: Sequence[int],
    cancel: bool = True,
    pick: bool = False,
    picked: int | None = None,
) -> discord.ui.View | None:
    """Cancel (while the job may run), one "Get epoch N" per epoch and, on the final message, the "Use epoch N"
    menu (in Cancel's row: a finished job has nothing to cancel); None when there is nothing to press."""
    view = discord.ui.View(timeout=None)
    shown = list(epochs)[-MAX_EPOCH_BUTTONS:]
    for index, epoch in enumerate(shown):
        button = JobEpochButton(job_id, epoch)
        button.row = index // 5
        view.add_item(button)
    if cancel:
        cancel_button = JobCancelButton(job_id)
        cancel_button.row = 4
        view.add_item(cancel_button)
    elif pick and len(epochs) > 1:
        menu = JobPickSelect(job_id, epochs, picked)
        menu.row = 4
        view.add_item(menu)
    return view if view.children else None
