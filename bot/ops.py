"""Operator tools: `lorabot doctor` (is this deployment ready for its first job?), `lorabot pods` (lorabot's pods at
RunPod and who owns them), `lorabot reap` (terminate the ones no live job owns) and `lorabot volumes` (the volumes, one
per data center, their cache and their month; `prune` marks stale cache entries for deletion by the next CPU
stage on the volume).

The domain does the work (the cloud client, `jobs.pods`' reaper and its ownership rule, the artifact store); this
module only asks and words the answers for a terminal. No line it prints carries a secret: every line goes through
`redact` with the configured secret values, on top of the transports never putting keys in their errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, TextIO

import aiohttp
from aiohttp import web

from jobs.cloud import AsyncCloud, CloudAuthError, CloudError, GpuOffer, PodInfo, VolumeInfo, connect
from jobs.config import Settings, install_secret_redaction, redact
from jobs.names import job_public_id, parse_pod_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from jobs.volumes import VolumeLine
    from storage.artifacts import ArtifactStore

EXIT_OK = 0
EXIT_PROBLEMS = 1  # doctor found something a job needs missing or failing; reap was declined
EXIT_REFUSED = 2  # nothing was done: no key, no TTY to confirm, a configuration that does not load
DOCTOR_TIMEOUT_S = 20.0
PROBE_LINK_LIFETIME_S = 300


class Level(enum.Enum):
    OK = "✓"
    WARN = "!"  # worth knowing, but a job can still run (e.g. one fallback GPU out of stock)
    FAIL = "✗"  # a job cannot run until this is fixed


@dataclass(frozen=True)
class Check:
    level: Level
    what: str
    detail: str

    def render(self) -> str:
        return f"{self.level.value} {self.what}: {self.detail}"


def doctor_exit_code(checks: Sequence[Check]) -> int:
    return EXIT_PROBLEMS if any(c.level is Level.FAIL for c in checks) else EXIT_OK


def render_checks(checks: Sequence[Check], settings: Settings) -> str:
    secret_values = settings.secret_values()
    return "".join(redact(check.render(), secret_values) + "\n" for check in checks)


# --- doctor ---------------------------------------------------------------------------------------------------------


async def doctor(settings: Settings, *, store: ArtifactStore | None = None) -> list[Check]:
    """Every check a real deployment needs before its first job, in the order an operator fixes them.

    `store` defaults to the one the bot would build from `settings` (bot/app.py's rule: a bucket, else the data
    folder served by the bot)."""
    checks = await _runpod_checks(settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DOCTOR_TIMEOUT_S)) as http:
        checks.append(await _store_check(settings, http, store))
        checks.append(await _discord_check(settings, http))
    return checks


async def _runpod_checks(settings: Settings) -> list[Check]:
    rp = settings.runpod
    if rp.api_key is None:
        return [
            Check(
                Level.FAIL,
                "RunPod API key",
                "not set: set RUNPOD_API_KEY (a RunPod API key with pod and volume rights); without it the bot "
                "runs on the $0 sandbox cloud",
            )
        ]
    # Two tries per read, short back-off: the operator is waiting at a terminal, not a job at the scheduler.
    cloud = connect(rp.api, rp.api_key.get_secret_value(), rp.api_url, attempts=2, base_delay_s=0.5)
    try:
        try:
            offers = {dc: await cloud.list_gpu_offers(dc, clouds=("SECURE",)) for dc in rp.data_centers}
            volumes = await cloud.list_volumes()
        except CloudAuthError as exc:
            return [Check(Level.FAIL, "RunPod API key", _auth_problem(exc))]
        except CloudError as exc:
            return [Check(Level.FAIL, "RunPod API key", f"RunPod could not be asked: {exc}")]
    finally:
        await cloud.close()
    where, api = rp.api_url or "RunPod", "GraphQL" if rp.api == "graphql" else "REST v2"
    checks = [Check(Level.OK, "RunPod API key", f"accepted by {where} ({api} catalog read and volume list)")]
    for dc in rp.data_centers:
        checks.append(_volume_check(dc, volumes))
    gpu_checks = [check for dc in rp.data_centers for check in _gpu_checks(settings, dc, offers[dc])]
    checks.extend(gpu_checks)
    if not any(check.level is Level.OK for check in gpu_checks):
        checks.append(
            Check(
                Level.WARN,
                "GPU stock",
                "no fallback GPU has stock under the price cap right now: jobs wait for one "
                f"(up to {rp.no_stock_deadline_s // 60} min) before failing",
            )
        )
    return checks


def _auth_problem(exc: CloudAuthError) -> str:
    # CloudAuthError covers both refusals; both transports name the HTTP status in the message (and never the key).
    if "401" in str(exc):
        return "RunPod refused the API key (401): check RUNPOD_API_KEY (RunPod console → Settings → API Keys)"
    return f"the key lacks permission (403) for a read lorabot needs: give RUNPOD_API_KEY read/write rights ({exc})"


def _volume_check(dc: str, volumes: Sequence[VolumeInfo]) -> Check:
    # The name Orchestrator._ensure_volume looks up and creates.
    name = f"lorabot-{dc.lower()}"
    found = [v for v in volumes if v.name == name and v.data_center_id == dc]
    if not found:
        return Check(Level.OK, f"Network Volume in {dc}", f"none yet: lorabot creates {name} on the first job")
    volume = found[0]
    return Check(Level.OK, f"Network Volume in {dc}", f"{volume.name} ({volume.id}), {volume.size_gb} GB")


def _gpu_checks(settings: Settings, dc: str, offers: Sequence[GpuOffer]) -> list[Check]:
    """One line per fallback choice, judged the way the orchestrator picks candidates (memory, price cap, stock)."""
    rp = settings.runpod
    cap = Decimal(rp.max_gpu_price_per_hr)
    by_key = {(o.gpu_type_id, o.cloud): o for o in offers}
    checks = []
    for choice in rp.gpu_fallback:
        what = f"GPU {choice.gpu_type_id} in {dc}"
        offer = by_key.get((choice.gpu_type_id, choice.cloud))
        if offer is None:
            checks.append(Check(Level.WARN, what, f"not in RunPod's {choice.cloud.lower()} catalog"))
            continue
        price = Decimal(offer.price_micros_per_hr) / 1_000_000
        label = f"{offer.display_name} {offer.cloud.lower()}"
        if offer.memory_gb < rp.min_gpu_memory_gb:
            checks.append(Check(Level.WARN, what, f"{label} has {offer.memory_gb} GB, under {rp.min_gpu_memory_gb} GB"))
        elif not offer.available:
            checks.append(Check(Level.WARN, what, f"{label}: no stock now"))
        elif price > cap:
            checks.append(Check(Level.WARN, what, f"{label} ${price:.2f}/h: over the price cap (${cap:.2f}/h)"))
        else:
            checks.append(Check(Level.OK, what, f"{label} ${price:.2f}/h, stock {offer.stock}"))
    return checks


async def _store_check(settings: Settings, http: aiohttp.ClientSession, store: ArtifactStore | None) -> Check:
    what = "artifact store"
    if store is None:
        if settings.s3.bucket is None and settings.public_url is None:
            return Check(
                Level.FAIL,
                what,
                "pods cannot reach one: set S3_BUCKET (+ S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_ENDPOINT_URL "
                "for R2), or LORABOT_PUBLIC_URL so pods reach the bot's own artifact server",
            )
        try:
            from bot.app import url_secret
            from storage.artifacts_factory import open_artifact_store

            store = open_artifact_store(settings, url_secret(settings))
        except Exception as exc:  # a bad setting: say which, never a traceback
            return Check(Level.FAIL, what, f"cannot be opened: {type(exc).__name__}: {exc}")
    label = f"bucket {settings.s3.bucket}" if settings.s3.bucket else f"local folder served at {settings.public_url}"
    try:
        async with _serving_local_store(settings, store) as served_by:
            await _round_trip(store, http)
    except Exception as exc:  # any failure is the check's answer, not a crash
        return Check(Level.FAIL, what, f"{label}: {exc}")
    return Check(Level.OK, what, f"{label}: wrote, read back through a presigned GET, deleted{served_by}")


async def _round_trip(store: ArtifactStore, http: aiohttp.ClientSession) -> None:
    """Write a small object, read it back through a presigned URL (as a pod does, without credentials), delete it."""
    key = f"doctor/{secrets.token_hex(8)}.txt"
    payload = f"lorabot doctor {dt.datetime.now(dt.UTC).isoformat()}\n".encode()
    try:
        await asyncio.to_thread(store.put_bytes, key, payload, "text/plain")
    except Exception as exc:
        raise _StoreProblem(f"writing {key} failed: {exc}") from None
    read_problem: _StoreProblem | None = None
    try:
        await _read_back(store, key, payload, http)
    except _StoreProblem as exc:
        read_problem = exc
    # Deleted whatever the read found: the probe must not stay in the bucket, and the bot needs delete rights too.
    try:
        await asyncio.to_thread(store.delete, key)
    except Exception as exc:
        failed = f"deleting {key} failed: {exc}"
        raise _StoreProblem(f"{read_problem}; {failed}" if read_problem else failed) from None
    if read_problem is not None:
        raise read_problem


async def _read_back(store: ArtifactStore, key: str, payload: bytes, http: aiohttp.ClientSession) -> None:
    url = store.presign_get(key, PROBE_LINK_LIFETIME_S)
    try:
        async with http.get(url) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _StoreProblem(f"the presigned GET could not be fetched ({type(exc).__name__})") from None
    if status != 200:
        raise _StoreProblem(f"the presigned GET answered HTTP {status}")
    if body != payload:
        raise _StoreProblem("the presigned GET returned other bytes than were written")


class _StoreProblem(Exception):
    pass


@contextlib.asynccontextmanager
async def _serving_local_store(settings: Settings, store: ArtifactStore) -> AsyncIterator[str]:
    """A local store's presigned URLs point at the bot's own web server. When the bot is not running, serve the
    store's routes on its address for the check, so the URL (through LORABOT_PUBLIC_URL's proxy, if any) is
    tested as pods will use it; when the address is taken, the running bot serves them. Yields who served it."""
    from storage.artifacts_local import LocalArtifactStore
    from storage.http import add_artifact_routes

    if not isinstance(store, LocalArtifactStore):
        yield ""
        return
    app = web.Application()
    add_artifact_routes(app, store)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        except OSError:
            yield " (served by the running bot)"
        else:
            yield f" (served by this check on {settings.http_host}:{settings.http_port})"
    finally:
        await runner.cleanup()


async def _discord_check(settings: Settings, http: aiohttp.ClientSession) -> Check:
    what = "Discord token"
    token = settings.discord.token
    if token is None:
        return Check(Level.FAIL, what, "not set: set DISCORD_TOKEN (the bot token from the Discord developer portal)")
    base = (settings.discord.api_base or _discord_default_api_base()).rstrip("/")
    try:
        async with http.get(f"{base}/users/@me", headers={"Authorization": f"Bot {token.get_secret_value()}"}) as resp:
            status = resp.status
            me = await resp.json(content_type=None) if status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Check(Level.FAIL, what, f"Discord could not be asked ({type(exc).__name__})")
    if status == 401:
        return Check(Level.FAIL, what, "Discord refused the token (401): check DISCORD_TOKEN")
    if status != 200:
        return Check(Level.FAIL, what, f"Discord answered HTTP {status} to /users/@me")
    name = me.get("username", "?") if isinstance(me, dict) else "?"
    return Check(Level.OK, what, f"accepted: the bot is {name}")


def _discord_default_api_base() -> str:
    # discord.py's own base URL, so the check asks the Discord API version the bot will speak.
    import discord.http

    return str(discord.http.Route.BASE)


# --- pods and reap --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodLine:
    pod: PodInfo
    job: str | None  # "j42"; None when the name is not one lorabot gives (never reaped)
    owned: bool  # a live job owns it (jobs.pods.owned_by_live_job)

    @property
    def reapable(self) -> bool:
        return self.job is not None and not self.owned


async def lorabot_pods(cloud: AsyncCloud, sessions: sessionmaker[Session]) -> list[PodLine]:
    """Every `lorabot-*` pod at RunPod with its job and whether a live job owns it (the reaper's own rule)."""
    from jobs.pods import owned_by_live_job
    from storage.db import session_scope

    lines = []
    for pod in sorted(await cloud.list_pods("lorabot-"), key=lambda p: p.name):
        parsed = parse_pod_name(pod.name)
        with session_scope(sessions) as s:
            # now: a finished job's /try or test-window pod is its job's only while kept (the reaper's own rule)
            owned = owned_by_live_job(s, pod, dt.datetime.now(dt.UTC))
        lines.append(PodLine(pod, job_public_id(parsed.job_id) if parsed else None, owned))
    return lines


def render_pods(lines: Sequence[PodLine]) -> str:
    if not lines:
        return "no lorabot pods at RunPod\n"
    rows = [("NAME", "ID", "JOB", "STATUS", "$/H", "AGE", "OWNER")]
    for line in lines:
        pod = line.pod
        if line.job is None:
            owner = "not a name lorabot gives: left alone"
        elif line.owned:
            owner = f"live job {line.job}"
        else:
            owner = "no live job: reap terminates it"
        rows.append(
            (
                pod.name,
                pod.id,
                line.job or "-",
                pod.status,
                f"{Decimal(pod.cost_per_hr_micros) / 1_000_000:.2f}",
                _age(pod.uptime_seconds),
                owner,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def _age(seconds: int) -> str:
    """RunPod's uptime of the running container; unknown (0) before it runs."""
    if seconds <= 0:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


async def reap(
    cloud: AsyncCloud,
    sessions: sessionmaker[Session],
    *,
    startup_timeout_s: float,
    confirm: Callable[[Sequence[PodLine]], bool],
    say: Callable[[str], None],
) -> int:
    """Show the pods no live job owns, ask `confirm`, then let the reaper terminate exactly those (it checks each
    again, so one a job took over meanwhile survives)."""
    from jobs.pods import PodKeeper

    orphans = [line for line in await lorabot_pods(cloud, sessions) if line.reapable]
    if not orphans:
        say("no lorabot pods without a live job: nothing to reap\n")
        return EXIT_OK
    say(render_pods(orphans))
    if not confirm(orphans):
        say("nothing terminated\n")
        return EXIT_PROBLEMS
    keeper = PodKeeper(
        sessions=sessions, cloud=cloud, clock=lambda: dt.datetime.now(dt.UTC), startup_timeout_s=startup_timeout_s
    )
    reaped = await keeper.reap(only={line.pod.id for line in orphans})
    for name in reaped:
        say(f"terminated {name}\n")
    left = len(orphans) - len(reaped)
    if left:
        say(f"{left} pod(s) were taken over by a live job meanwhile and left running\n")
    return EXIT_OK


# --- the commands ---------------------------------------------------------------------------------------------------


def setup_logging(settings: Settings) -> None:
    """Warnings only (a retried RunPod call, the reaper's own line), with every secret value scrubbed: the operator
    reads the commands' answers on stdout, not the bot's INFO log."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install_secret_redaction(settings)


def doctor_command(settings: Settings) -> int:
    checks = asyncio.run(doctor(settings))
    print(render_checks(checks, settings), end="")
    return doctor_exit_code(checks)


def pods_command(settings: Settings) -> int:
    opened = _open_runpod(settings, "pods")
    if opened is None:
        return EXIT_REFUSED
    cloud, sessions = opened

    async def run() -> list[PodLine]:
        try:
            return await lorabot_pods(cloud, sessions)
        finally:
            await cloud.close()

    try:
        lines = asyncio.run(run())
    except CloudError as exc:
        print(redact(f"lorabot pods: {_cloud_problem(exc)}", settings.secret_values()), file=sys.stderr)
        return EXIT_PROBLEMS
    print(render_pods(lines), end="")
    return EXIT_OK


def reap_command(settings: Settings, *, yes: bool, stdin: TextIO | None = None) -> int:
    """`stdin` is where the confirmation is read (sys.stdin by default); without a terminal there, only `--yes`
    may terminate anything: a script or a cron job must say so explicitly."""
    stdin = sys.stdin if stdin is None else stdin
    if not yes and not _interactive(stdin):
        print(
            "lorabot reap: refused: no terminal to confirm on; run `lorabot reap --yes` to terminate without asking",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    opened = _open_runpod(settings, "reap")
    if opened is None:
        return EXIT_REFUSED
    cloud, sessions = opened

    def confirm(orphans: Sequence[PodLine]) -> bool:
        if yes:
            return True
        print(f"Terminate these {len(orphans)} pod(s)? [y/N] ", end="", flush=True)
        return stdin.readline().strip().lower() in ("y", "yes")

    async def run() -> int:
        try:
            return await reap(
                cloud,
                sessions,
                startup_timeout_s=settings.runpod.startup_timeout_s,
                confirm=confirm,
                say=lambda text: print(text, end="", flush=True),
            )
        finally:
            await cloud.close()

    try:
        return asyncio.run(run())
    except CloudError as exc:
        print(redact(f"lorabot reap: {_cloud_problem(exc)}", settings.secret_values()), file=sys.stderr)
        return EXIT_PROBLEMS


def render_volumes(lines: Sequence[VolumeLine], month: str) -> str:
    """Each volume (one per data center) with its cache; a stale entry says so, one a live job uses says that, one
    marked for deletion says since when; then what CPU stages deleted for prune (or kept, and why)."""
    from jobs.ledger import format_usd

    if not lines:
        return "no Network Volumes yet: each data center's is made by the first job placed there\n"
    out = []
    for line in lines:
        out.append(
            f"{line.data_center_id}  {line.runpod_volume_id or '-'}  {line.size_gb} GB provisioned  "
            f"{month}: {format_usd(line.month_micros)}\n"
        )
        if not line.cache:
            out.append("  (no cache yet)\n")
        for cache in line.cache:
            used = f"last job {cache.last_used_at:%Y-%m-%d}" if cache.last_used_at else "no job recorded"
            state = "in use by a live job" if cache.in_use else "stale" if cache.stale else "current"
            if cache.prune_requested_at is not None:
                state += f", pending deletion (marked {cache.prune_requested_at:%Y-%m-%d %H:%M} UTC)"
            out.append(f"  {cache.kind.value:<8}{cache.key}  ready {cache.ready_at:%Y-%m-%d}, {used}: {state}\n")
            if cache.stale or cache.prune_requested_at is not None:
                out.append(f"          deletes {', '.join(cache.paths)}\n")
        if line.pending:
            out.append(_pending_line(line))
        for freed in line.freed:
            done = f"kept: {freed.refused}" if freed.refused else f"deleted, {_size(freed.freed_bytes)} freed"
            out.append(f"  {freed.at:%Y-%m-%d %H:%M} {freed.job}'s CPU stage: {freed.kind} {freed.key} {done}\n")
    return "".join(out)


def _pending_line(line: VolumeLine) -> str:
    """Marks are carried out only by a cold job's CPU pod on the volume (RunPod has no file API): on an idle volume they
    wait for ever, and until then nothing is deleted and no room is freed."""
    count = len(line.pending)
    what = f"{count} entr{'y' if count == 1 else 'ies'} marked for deletion"
    since = f" since {line.pending_since:%Y-%m-%d %H:%M} UTC" if line.pending_since else ""
    if line.cpu_stage_job is not None:
        return (
            f"  {what}{since}: the CPU pod of {line.cpu_stage_job} is on this volume now and deletes those its "
            "manifest carried (a mark made after it started waits for the next one); nothing is freed until it "
            "reports them gone\n"
        )
    return (
        f"  {what}{since}: NOT deleted yet, no room freed: waiting for the next cold job's CPU pod on this volume "
        "(none is running; a volume no job is placed on keeps them for ever)\n"
    )


def _size(count: int) -> str:
    """Bytes as people read them (decimal units, as RunPod sizes volumes)."""
    if count < 1000:
        return f"{count:,} bytes"
    value = count / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"


def volumes_command(settings: Settings, *, prune: bool, yes: bool, stdin: TextIO | None = None) -> int:
    """`lorabot volumes` lists; `lorabot volumes prune` marks the stale cache entries for deletion by the next CPU
    stage on their volume (jobs.volumes says how, and what it does not do), after a confirmation or with `--yes`."""
    from jobs.ledger import month_of
    from jobs.manifest import recipe_hash
    from jobs.recipe import runpod_recipe
    from jobs.volumes import PRUNE_NOTE, list_volume_lines, mark_stale
    from storage.db import make_engine, make_session_factory, migrate, session_scope

    stdin = sys.stdin if stdin is None else stdin
    if prune and not yes and not _interactive(stdin):
        print(
            "lorabot volumes prune: refused: no terminal to confirm on; run `lorabot volumes prune --yes`",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    now = dt.datetime.now(dt.UTC)
    month = month_of(now)
    env_hash = recipe_hash(runpod_recipe())
    with session_scope(sessions) as s:
        lines = list_volume_lines(s, env_hash=env_hash, now=now, month=month)
    print(render_volumes(lines, month), end="")
    if not prune:
        return EXIT_OK
    stale = sum(1 for line in lines for cache in line.stale if cache.prune_requested_at is None)
    if not stale:
        pending = sum(len(line.pending) for line in lines)
        print(f"nothing stale to prune{f' ({pending} already pending deletion)' if pending else ''}\n", end="")
        return EXIT_OK
    print(f"{PRUNE_NOTE}.\n", end="")
    if not yes:
        question = f"Mark these {stale} stale cache entr{'y' if stale == 1 else 'ies'} for deletion? [y/N] "
        print(question, end="", flush=True)
        if stdin.readline().strip().lower() not in ("y", "yes"):
            print("nothing marked\n", end="")
            return EXIT_PROBLEMS
    with session_scope(sessions) as s:
        marked = mark_stale(s, lines, now=now)
    print(
        f"marked {marked} stale cache entr{'y' if marked == 1 else 'ies'} for deletion: the next CPU stage on "
        "each volume deletes them first; `lorabot volumes` shows them pending until then, and what was freed\n",
        end="",
    )
    return EXIT_OK


def _interactive(stdin: TextIO | None) -> bool:
    if stdin is None or stdin.closed:
        return False
    try:
        return stdin.isatty()
    except (OSError, ValueError):
        return False


def _open_runpod(settings: Settings, command: str) -> tuple[AsyncCloud, sessionmaker[Session]] | None:
    """RunPod and the job store as the bot has them (migrated first, as `lorabot run` does), or None after saying
    why not."""
    from storage.db import make_engine, make_session_factory, migrate

    key = settings.runpod.api_key
    if key is None:
        print(
            f"lorabot {command}: refused: RUNPOD_API_KEY is not set (without it the bot's pods are the sandbox's, "
            "which live inside the bot process)",
            file=sys.stderr,
        )
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    return connect(settings.runpod.api, key.get_secret_value(), settings.runpod.api_url), sessions


def _cloud_problem(exc: CloudError) -> str:
    if isinstance(exc, CloudAuthError):
        return _auth_problem(exc)
    return f"RunPod could not be asked: {exc}"
