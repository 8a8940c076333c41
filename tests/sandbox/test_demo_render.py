"""What the demo prints for each notice the Discord thread would get, its progress bar and its cost table."""

from __future__ import annotations

from jobs.sandbox.demo_render import CostRow, cost_table, progress_bar, render_notice, usd
from jobs.states import NoticeKind

COST = {"volume_micros": 2_900, "cpu_pod_micros": 1_100, "gpu_pod_micros": 26_400, "total_micros": 30_400}


def test_money_shows_four_decimals_because_sandbox_items_cost_fractions_of_a_cent():
    assert usd(1_100) == "$0.0011"
    assert usd(440_000) == "$0.4400"
    assert usd(None) == "$0.0000"


def test_an_epoch_notice_shows_loss_eta_live_cost_checkpoint_and_samples():
    text = render_notice(
        NoticeKind.EPOCH,
        {
            "epoch": 2,
            "epochs": 3,
            "loss": 0.09441,
            "eta_seconds": 75,
            "checkpoint": {"key": "jobs/j1/epochs/000002/lbdemo-000002.safetensors"},
            "samples": ["jobs/j1/epochs/000002/sample-00.png"],
            "cost": {**COST, "live": True},
        },
        job="j1",
    )

    assert text.splitlines() == [
        "[j1] epoch 2/3: loss 0.0944, ETA 1 min 15 s, cost so far $0.0304 (volume $0.0029, CPU pod $0.0011, "
        "GPU pod $0.0264; sandbox: $0 real)",
        "    checkpoint jobs/j1/epochs/000002/lbdemo-000002.safetensors",
        "    sample jobs/j1/epochs/000002/sample-00.png",
    ]


def test_the_success_notice_lists_the_final_lora_every_epoch_and_the_cost():
    text = render_notice(
        NoticeKind.SUCCEEDED,
        {
            "final": {"key": "jobs/j1/final/lbdemo.safetensors", "size": 19_456},
            "epochs": [{"epoch": 1, "key": "jobs/j1/epochs/000001/lbdemo-000001.safetensors", "size": 19_456}],
            "cost": COST,
        },
        job="j1",
    )

    lines = text.splitlines()
    assert lines[0] == "[j1] succeeded: final LoRA jobs/j1/final/lbdemo.safetensors (19.0 KiB)"
    assert lines[1] == "    epoch 1: jobs/j1/epochs/000001/lbdemo-000001.safetensors (19.0 KiB)"
    assert lines[2].startswith("    cost $0.0304 (volume")


def test_failures_waits_and_plain_info_say_what_happened():
    assert render_notice(NoticeKind.FAILED, {"reason": "the loss became NaN"}, job="j4") == (
        "[j4] FAILED: the loss became NaN"
    )
    assert render_notice(NoticeKind.WAITING_GPU, {"tried": ["RTX 4090 community"]}, job="j4") == (
        "[j4] waiting for a GPU: no stock for RTX 4090 community; retrying"
    )
    assert render_notice(
        NoticeKind.INFO, {"text": "training started", "gpu": "NVIDIA GeForce RTX 4090", "cloud": "COMMUNITY"}, job="j4"
    ) == ("[j4] training started on NVIDIA GeForce RTX 4090 (community)")
    assert render_notice(NoticeKind.PREPARING, {"text": "the volume is ready"}, job="j4") == (
        "[j4] preparing: the volume is ready"
    )


def test_the_progress_bar_fills_with_the_steps_and_names_the_epoch():
    assert progress_bar(0, 72) == "[..............................] 0/72 steps"
    assert progress_bar(36, 72, epoch=2, epochs=3) == "[###############...............] 36/72 steps · epoch 2/3"
    assert progress_bar(90, 72).startswith("[" + "#" * 30 + "]")
    assert progress_bar(5, 0) == "[..............................] 5/0 steps"


def test_the_cost_table_adds_up_in_micro_dollars_and_says_no_real_money_was_spent():
    rows = [
        CostRow("cpu_pod (lorabot-j1-cpu, CPU)", 67, 60_000, 1_117),
        CostRow("gpu_pod (lorabot-j1-gpu, NVIDIA GeForce RTX 4090)", 215, 440_000, 26_278),
        CostRow("volume", 269, 2_877, 2_877),
    ]

    table = cost_table(rows, runpod_bill_micros=30_272)

    assert "| gpu_pod (lorabot-j1-gpu, NVIDIA GeForce RTX 4090) | 3 min 35 s | $0.4400/h | $0.0263 |" in table
    assert "| **Total** | | | **$0.0303** |" in table
    assert "The sandbox's RunPod emulator billed $0.0303 for the same pods and volume." in table
    assert "$0 real money was spent" in table
