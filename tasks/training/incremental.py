"""Incremental nights: fine-tune the champion's network, or retrain in full.

A night with one new day need not learn the whole year again. When a `@champion` exists
whose network fits tonight's data (same declared features, so its fitted preprocessing
applies; a net config its hyperparameters reproduce), whose training window ends before
tonight's holdout starts (no holdout row was ever trained on), and whose lineage's last
full retrain is younger than `NIGHTSHIFT_FULL_RETRAIN_EVERY_DAYS`, the night trains from
the champion's weights for `NIGHTSHIFT_FINE_TUNE_EPOCHS` epochs on the updated window,
with the champion's preprocessing and hyperparameters (no search). Otherwise it retrains
in full, as before. The gate decides either way, on the same holdout.

The decision is read from the registry alone (the champion's run params and tags), so the
periodic full retrain survives restarts: every release records its `training_mode`, the
`parent_version` it was fine-tuned from and `last_full_retrain_as_of`.

Fine-tune nights keep the champion's vocabularies and scaling, so a category first seen
after the last full retrain goes to the unknown slot until the next full retrain refits
them: that bounded staleness is what the full-retrain period is for.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from tasks.core.context import RunContext
from tasks.core.results import write_result
from tasks.features.build import FeatureSet, load_preprocessor, preprocessor_for
from tasks.training.config import FitSample, TrainConfig
from tasks.training.model import NetConfig

logger = logging.getLogger("nightshift.incremental")

FULL, FINE_TUNE = "full", "fine-tune"
# MLflow run params and model-version tags every release carries (read back here)
MODE_KEY = "training_mode"
PARENT_KEY = "parent_version"
LAST_FULL_KEY = "last_full_retrain_as_of"
WEIGHTS_DIGEST_TAG = "fp32_weights_sha256"
STUDENT_DIGEST_TAG = "student_weights_sha256"
# the blend's weighing tree (fitted without the validation days): a fine-tune night reuses
# the champion's (tasks/evaluation/blend.py::ReusedTree), logged as blend/<file>
WEIGHING_TREE_DIGEST_TAG = "weighing_tree_sha256"
WEIGHING_TREE_FIT_UNTIL_TAG = "weighing_tree_fit_until"
WEIGHING_TREE_FILE = "blend_tree.txt"


@dataclass(frozen=True)
class ChampionFacts:
    """What the mode decision needs to know about the current champion (from the registry).

    `mismatch` says why its network cannot be fine-tuned tonight (None: it can).
    """

    version: str
    last_full_retrain_as_of: date | None
    mismatch: str | None = None


@dataclass(frozen=True)
class ModeDecision:
    """Full retrain or fine-tune, why, and the lineage the release will record."""

    mode: str
    reason: str
    parent_version: str | None  # the champion fine-tuned from (None on a full night)
    last_full_retrain_as_of: date  # this night's own as_of on a full night


def decide_mode(champion: ChampionFacts | None, as_of: date, every_days: int) -> ModeDecision:
    """Fine-tune the champion, or retrain in full (the rule in the module docstring)."""

    def full(reason: str) -> ModeDecision:
        return ModeDecision(FULL, reason, None, as_of)

    if every_days == 0:
        return full("NIGHTSHIFT_FULL_RETRAIN_EVERY_DAYS=0: every night retrains in full")
    if champion is None:
        return full("no @champion to fine-tune")
    if champion.mismatch:
        return full(f"champion v{champion.version} cannot be fine-tuned: {champion.mismatch}")
    last_full = champion.last_full_retrain_as_of
    if last_full is None:
        return full(f"champion v{champion.version} records no {LAST_FULL_KEY}")
    age = (as_of - last_full).days
    if age >= every_days:
        return full(
            f"full retrain due: the last one ({last_full}) is {age} day(s) old "
            f"(NIGHTSHIFT_FULL_RETRAIN_EVERY_DAYS={every_days})"
        )
    return ModeDecision(
        FINE_TUNE,
        f"fine-tuning champion v{champion.version}; last full retrain {last_full} "
        f"({age} of {every_days} day(s))",
        champion.version,
        last_full,
    )


@dataclass
class TrainingPlan:
    """Tonight's training mode and what a fine-tune starts from.

    On a fine-tune night `features` is tonight's split with the champion's fitted
    preprocessor (so the embedding tables keep their shape), `config` the champion's
    hyperparameters, `init_weights_path` its fp32 weights copied into tonight's run
    folder, and `compression_variant` the variant it was served as. When that variant is
    a distilled student, `init_student` holds the champion's student (weights and shape
    paths, checked against the registry's digest) for compression to start from, and
    `student_note` says why not when it does not. `init_weighing_tree` is the champion's
    blend weighing tree (path, last fitting day, where from), checked likewise, which the
    evaluation weighs tonight's blend with instead of fitting its own
    (`tasks.evaluation.blend.ReusedTree`); `weighing_tree_note` says which, or why not.
    `sample`: the fitting rows the fine-tune trains on (every row the champion never
    fitted, a replay fraction of the rest; None: the whole window).
    """

    mode: str
    reason: str
    features: FeatureSet
    last_full_retrain_as_of: str
    parent_version: str | None = None
    config: TrainConfig | None = None
    init_weights_path: str | None = None
    fine_tune_epochs: int = 0
    compression_variant: str | None = None
    init_student: tuple[str, str] | None = None
    student_note: str | None = None
    init_weighing_tree: tuple[str, str, str] | None = None
    weighing_tree_note: str | None = None
    sample: FitSample | None = None

    @property
    def fine_tune(self) -> bool:
        return self.mode == FINE_TUNE

    def lineage(self) -> dict[str, str]:
        """The params/tags a release records so the next night can decide from the registry."""
        return {
            MODE_KEY: self.mode,
            PARENT_KEY: self.parent_version or "none",
            LAST_FULL_KEY: self.last_full_retrain_as_of,
            "fine_tune_epochs": str(self.fine_tune_epochs),
            "fine_tune_replay_fraction": str(self.sample.replay_fraction if self.sample else 1.0),
        }


def full_plan(features: FeatureSet, reason: str, as_of: date) -> TrainingPlan:
    """A full retrain: tonight's preprocessing, the search (if enabled), fresh weights."""
    return TrainingPlan(FULL, reason, features, as_of.isoformat())


def train_config_from_params(params: dict[str, str]) -> TrainConfig:
    """A TrainConfig from an MLflow run's params (lists are logged as JSON); ValueError if not."""
    values = {}
    for name in TrainConfig.model_fields:
        if name in params:
            raw = params[name]
            values[name] = json.loads(raw) if raw.startswith("[") else raw
    return TrainConfig.model_validate(values)


def _parse_date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _train_end(params: dict[str, str]) -> date | None:
    """The last training day of a release, from its `train_days` param ("('a', 'b')")."""
    raw = params.get("train_days", "")
    return _parse_date(raw.strip("()[] ").replace("'", "").replace('"', "").split(",")[-1].strip())


def plan_training(
    ctx: RunContext,
    features: FeatureSet,
    every_days: int,
    fine_tune_epochs: int,
    log: logging.Logger | logging.LoggerAdapter = logger,
    warm_student: bool = False,
    replay_fraction: float = 1.0,
) -> TrainingPlan:
    """The plan stage: look up the champion, decide the mode, stage what a fine-tune needs.

    `warm_student` (compression starts a fine-tune night's student from the champion's,
    `CompressionConfig.distill_fine_tune_epochs` > 0) also stages the champion's student;
    otherwise it is not downloaded. `replay_fraction` < 1: a fine-tune fits every row the
    champion never fitted and that fraction of the older ones (`FitSample`).

    Everything a fine-tune loads is checked first: the served model's files against the
    registry's digests (its preprocessor among them), the fp32 weights against the digest
    the release recorded, and the shapes against tonight's declared features. Any failed
    check is a full retrain with the reason in the log and the summary, never an error.
    """
    plan = _plan(ctx, features, every_days, fine_tune_epochs, warm_student, replay_fraction)
    log.info("plan: %s (%s)", plan.mode, plan.reason)
    if plan.sample:
        log.info("plan: the fine-tune fits %s", plan.sample.describe())
    if plan.student_note:
        log.info("plan: distilled student: %s", plan.student_note)
    if plan.weighing_tree_note:
        log.info("plan: the blend's weighing tree: %s", plan.weighing_tree_note)
    return write_result(ctx, "plan", plan)


def _plan(
    ctx: RunContext,
    features: FeatureSet,
    every_days: int,
    fine_tune_epochs: int,
    warm_student: bool = False,
    replay_fraction: float = 1.0,
) -> TrainingPlan:
    from mlflow.exceptions import MlflowException

    from tasks.release.integrity import registry_client
    from tasks.release.pyfunc import TamperedArtifactError

    if every_days == 0:  # no registry look-up at all
        decision = decide_mode(None, ctx.as_of, 0)
        return full_plan(features, decision.reason, ctx.as_of)
    client = registry_client(ctx.tracking_uri)
    try:
        version = client.get_model_version_by_alias(ctx.model_name, "champion")
    except MlflowException:
        return full_plan(features, decide_mode(None, ctx.as_of, every_days).reason, ctx.as_of)
    version_id, tags = str(version.version), version.tags
    try:
        params = client.get_run(version.run_id).data.params
    except MlflowException as error:
        params, unreadable = {}, f"its run cannot be read ({error})"
    else:
        unreadable = None
    # the lineage first (no download on a night that retrains in full anyway) ...
    facts = ChampionFacts(version_id, _parse_date(params.get(LAST_FULL_KEY)), unreadable)
    decision = decide_mode(facts, ctx.as_of, every_days)
    if decision.mode == FULL:
        return full_plan(features, decision.reason, ctx.as_of)
    # ... then its files, each checked: any refusal is a full retrain with the reason
    try:
        staged = _stage_champion(ctx, features, version_id, version.run_id, params, tags)
    except (MlflowException, TamperedArtifactError, OSError, KeyError) as error:
        staged = f"its files could not be loaded ({type(error).__name__}: {error})"
    if isinstance(staged, str):
        refused = decide_mode(replace(facts, mismatch=staged), ctx.as_of, every_days)
        return full_plan(features, refused.reason, ctx.as_of)
    config, preprocessor_path, weights_path = staged
    variant = tags.get("compression_variant")
    student, note = None, None
    if warm_student and variant and variant.startswith("distilled"):
        try:
            student = _stage_champion_student(ctx, version.run_id, tags)
        except (MlflowException, OSError) as error:
            student = f"its files could not be loaded ({type(error).__name__}: {error})"
        if isinstance(student, str):  # a cold student costs seconds, never the fine-tune
            student, note = None, f"trained from scratch: {student}"
        else:
            note = f"starts from champion v{version_id}'s student"
    try:
        tree = _stage_champion_tree(ctx, version_id, version.run_id, tags)
    except (MlflowException, OSError) as error:
        tree = f"its files could not be loaded ({type(error).__name__}: {error})"
    tree_note = f"fitted tonight: {tree}" if isinstance(tree, str) else tree[2]
    return TrainingPlan(
        mode=FINE_TUNE,
        reason=decision.reason,
        features=replace(features, preprocessor_path=preprocessor_path),
        last_full_retrain_as_of=decision.last_full_retrain_as_of.isoformat(),
        parent_version=decision.parent_version,
        config=config,
        init_weights_path=weights_path,
        fine_tune_epochs=fine_tune_epochs,
        compression_variant=variant,
        init_student=student,
        student_note=note,
        init_weighing_tree=None if isinstance(tree, str) else tree,
        weighing_tree_note=tree_note,
        sample=_fit_sample(ctx, params, config, replay_fraction),
    )


def _fit_sample(
    ctx: RunContext, params: dict[str, str], config: TrainConfig, replay_fraction: float
) -> FitSample | None:
    """The rows tonight's fine-tune fits: all after the champion's last fitting day (its
    window's end less its validation days), `replay_fraction` of the older ones."""
    train_end = _train_end(params)
    if replay_fraction >= 1 or train_end is None:  # staging refused a champion without one
        return None
    last_fitted = train_end - timedelta(days=config.validation_days)
    return FitSample(last_fitted.isoformat(), replay_fraction, ctx.seed)


def _served_artifact(model_dir: str, name: str) -> Path:
    """A downloaded served model's file by its pyfunc artifact name, as its MLmodel says.

    Each file keeps the name it had when logged: a release that was itself fine-tuned ships
    the `champion_preprocessor.json` its plan staged, not `preprocessor.json`, so a fixed
    name would refuse every second fine-tune night in a row.
    """
    from mlflow.models import Model

    artifacts = Model.load(model_dir).flavors["python_function"]["artifacts"]
    return Path(model_dir, artifacts[name]["path"])


def _checked_weights(
    ctx: RunContext, run_id: str, artifact_path: str, weights: str, scratch: str, digest: str
) -> Path | str:
    """Download a release's `artifact_path` folder into `scratch`; the folder, or why not:
    its `weights` file differs from the digest the release recorded."""
    import mlflow.artifacts

    # here, not at the top: the DDP ranks import this module (for `TrainingPlan`), and
    # `tasks.release.pyfunc` loads MLflow, ~1.3 s of each rank's warm-up for nothing
    from tasks.release.pyfunc import sha256_file

    folder = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=scratch,
            tracking_uri=ctx.tracking_uri,
        )
    )
    if sha256_file(str(folder / weights)) != digest:
        return "differ from the digest recorded at release"
    return folder


def _stage_champion_student(ctx: RunContext, run_id: str, tags: dict) -> tuple[str, str] | str:
    """Copy the champion's distilled student (weights, shape) into tonight's run folder.

    Returns (weights path, net-config path), or why not: no student recorded (released
    before students were kept), or weights that differ from the digest recorded at release.
    """

    if STUDENT_DIGEST_TAG not in tags:
        return f"no {STUDENT_DIGEST_TAG} tag on the version (released before students were kept)"
    lake, out_dir = ctx.lake, ctx.run_dir("plan")
    with tempfile.TemporaryDirectory(prefix="nightshift-student-") as scratch:
        files = _checked_weights(
            ctx, run_id, "student", "student_weights.pt", scratch, tags[STUDENT_DIGEST_TAG]
        )
        if isinstance(files, str):
            return f"its student weights {files} ({STUDENT_DIGEST_TAG})"
        weights_path = f"{out_dir}/champion_student_weights.pt"
        config_path = f"{out_dir}/champion_student_net_config.json"
        lake.write_bytes_atomic(weights_path, (files / "student_weights.pt").read_bytes())
        lake.write_bytes_atomic(config_path, (files / "student_net_config.json").read_bytes())
    return weights_path, config_path


def _stage_champion_tree(
    ctx: RunContext, version: str, run_id: str, tags: dict
) -> tuple[str, str, str] | str:
    """Copy the champion's blend weighing tree into tonight's run folder, checked.

    Returns (path, its last fitting day, where it is from), or why not: no tree recorded
    (a network-only release, or released before trees were kept), or a file that differs
    from the digest recorded at release. Evaluate still checks that its fitting days end
    before tonight's validation days.
    """
    if WEIGHING_TREE_DIGEST_TAG not in tags or WEIGHING_TREE_FIT_UNTIL_TAG not in tags:
        return f"no {WEIGHING_TREE_DIGEST_TAG} tag on the version (no blend was weighed)"
    out_dir = ctx.run_dir("plan")
    with tempfile.TemporaryDirectory(prefix="nightshift-tree-") as scratch:
        files = _checked_weights(
            ctx, run_id, "blend", WEIGHING_TREE_FILE, scratch, tags[WEIGHING_TREE_DIGEST_TAG]
        )
        if isinstance(files, str):
            return f"its weighing tree {files} ({WEIGHING_TREE_DIGEST_TAG})"
        path = f"{out_dir}/champion_{WEIGHING_TREE_FILE}"
        ctx.lake.write_bytes_atomic(path, (files / WEIGHING_TREE_FILE).read_bytes())
    fit_until = tags[WEIGHING_TREE_FIT_UNTIL_TAG]
    return path, fit_until, f"champion v{version}'s, fitted on days to {fit_until}"


def _stage_champion(
    ctx: RunContext, features: FeatureSet, version: str, run_id: str, params: dict, tags: dict
) -> tuple[TrainConfig, str, str] | str:
    """Copy the champion's preprocessor and weights into tonight's run folder, checked.

    Returns (config, preprocessor path, weights path), or why it cannot be fine-tuned.
    """

    from tasks.release.integrity import download_verified
    from tasks.training.loop import net_config_from_parts

    holdout_start = date.fromisoformat(features.holdout_days[0])
    train_end = _train_end(params)
    if train_end is None or train_end >= holdout_start:
        # its weights saw tonight's holdout days (a re-run of an earlier night, a backfill)
        return f"its training window ends {train_end}, not before tonight's holdout {holdout_start}"
    try:
        config = train_config_from_params(params)
    except ValueError as error:
        return f"its run params are not a TrainConfig ({error})"
    if WEIGHTS_DIGEST_TAG not in tags:
        return f"no {WEIGHTS_DIGEST_TAG} tag on the version (released before fine-tuning existed)"
    lake, out_dir = ctx.lake, ctx.run_dir("plan")
    with tempfile.TemporaryDirectory(prefix="nightshift-champion-") as scratch:
        model_dir = download_verified(ctx.tracking_uri, ctx.model_name, version, f"{scratch}/m")
        fp32_dir = _checked_weights(
            ctx, run_id, "fp32", "weights.pt", f"{scratch}/w", tags[WEIGHTS_DIGEST_TAG]
        )
        if isinstance(fp32_dir, str):
            return f"its fp32 weights {fp32_dir} ({WEIGHTS_DIGEST_TAG})"
        weights, net_config = fp32_dir / "weights.pt", fp32_dir / "net_config.json"
        preprocessor_file = _served_artifact(model_dir, "preprocessor")
        preprocessor = load_preprocessor(str(preprocessor_file))
        declared = preprocessor_for(ctx.spec)
        if (preprocessor.categorical, preprocessor.numeric) != (
            declared.categorical,
            declared.numeric,
        ):
            return "the dataset's declared features changed since its preprocessing was fitted"
        champion_net = NetConfig(**json.loads(net_config.read_text()))
        if champion_net != net_config_from_parts(preprocessor, config):
            return "its net config is not the one its hyperparameters and preprocessing give"
        preprocessor_path = f"{out_dir}/champion_preprocessor.json"
        weights_path = f"{out_dir}/champion_weights.pt"
        lake.write_bytes_atomic(preprocessor_path, preprocessor_file.read_bytes())
        lake.write_bytes_atomic(weights_path, weights.read_bytes())
    return config, preprocessor_path, weights_path
