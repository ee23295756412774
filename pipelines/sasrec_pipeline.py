"""The SASRec pipeline: download -> sequences -> train (a sweep) -> promote -> score -> evaluate.

Wiring only. `build_pipeline(sweep_parallelism)` makes it: KFP fixes a ParallelFor's
parallelism when the pipeline is compiled, so it is a compile setting
(`SWEEP_PARALLELISM=4 make compile-pipeline`, `sasrec run --sweep-parallelism 2`), not a
run parameter.
"""

import os
from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Model
from kfp.dsl.graph_component import GraphComponent

from components.close_runs import close_runs
from components.download import download
from components.evaluate import evaluate
from components.images import image_uri
from components.promote import promote
from components.recommend import merge_recommendations, recommend
from components.score import plan_scoring_shards, score_users
from components.sequences import sequences
from components.sweep import plan_trials, select_trial
from components.train import train
from pipelines import pod
from sasrec.config import DEFAULT_PROMOTION_METRIC

PIPELINE_NAME = "sasrec"
SWEEP_PARALLELISM_ENV = "SWEEP_PARALLELISM"
DEFAULT_SWEEP_PARALLELISM = 4  # trials training at once on a cluster, one GPU each


class PipelineOutputs(NamedTuple):
    """What a run hands back: the model directory and the evaluation directory."""

    model: Model
    evaluation: Artifact


def build_pipeline(sweep_parallelism: int = DEFAULT_SWEEP_PARALLELISM) -> GraphComponent:
    """The pipeline, with at most `sweep_parallelism` trials training at once (0: no limit).

    Long by nature: the pipeline's parameters with their documentation (what the KFP UI
    shows), then the wiring in three stages (data, training, the model's verdict).
    """

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="SASRec on Amazon Reviews 2023: download, sequences, train, evaluate.",
    )
    def sasrec_pipeline(
        source: str = "amazon2023:Video_Games",
        amazon_base_url: str = "",
        with_item_titles: bool = False,
        kcore: int = 5,
        split: str = "leave_one_out",
        hparams: dict = {},  # noqa: B006 - KFP takes parameter defaults as literals
        hparams_grid: list = [],  # noqa: B006
        gpu_count: int = 1,
        gpu_type: str = "nvidia.com/gpu",
        train_nodes: int = 1,
        train_node_selector: dict = {},  # noqa: B006
        train_tolerations: list = [],  # noqa: B006
        checkpoint_root: str = "",
        mlflow_tracking_uri: str = "",
        mlflow_experiment: str = "sasrec",
        mlflow_secret: str = pod.MLFLOW_SECRET,
        storage_secret: str = pod.STORAGE_SECRET,
        registered_model_name: str = "",
        promotion_metric: str = DEFAULT_PROMOTION_METRIC,
        write_recommendations: bool = True,
        recommendations_k: int = 10,
        scoring_shards: int = 1,
        download_cpu: str = pod.DOWNLOAD.cpu,
        download_memory: str = pod.DOWNLOAD.memory,
        sequences_cpu: str = pod.SEQUENCES.cpu,
        sequences_memory: str = pod.SEQUENCES.memory,
        train_cpu: str = pod.TRAIN.cpu,
        train_memory: str = pod.TRAIN.memory,
        evaluate_cpu: str = pod.EVALUATE.cpu,
        evaluate_memory: str = pod.EVALUATE.memory,
    ) -> PipelineOutputs:
        """Train and evaluate SASRec on one source.

        Args:
            source: amazon2023:<Category>, an http(s), gs:// or s3:// URL, or a path the tasks
                can read.
            amazon_base_url: Mirror of the Amazon Reviews 2023 files; empty for the official site.
            with_item_titles: Fetch the category's item metadata for titles in the reports.
            kcore: Minimum interactions per user and item; 0 disables the filter.
            split: leave_one_out, or timestamp (the Amazon Reviews 2023 benchmark's cut points).
            hparams: Hyperparameter overrides, e.g. {"max_epochs": 50}.
            hparams_grid: A sweep: one trial per override object over hparams, e.g.
                [{"hidden_size": 64}, {"hidden_size": 128}]; the trial with the best validation
                NDCG@10 is evaluated and registered. Empty: one training with hparams.
            gpu_count: GPUs requested by the train task, one data-parallel process each; 0 trains
                on the CPU. With 1 or more, training fails at once when CUDA is not usable.
            gpu_type: Kubernetes resource name of the GPUs, e.g. nvidia.com/gpu.
            train_nodes: Nodes to train on. Above 1 the train task creates a Kubeflow Trainer
                TrainJob (v2.0 or later, runtime torch-distributed) of train_nodes pods with
                gpu_count processes each, train_cpu and train_memory, the same secrets; it
                follows the job, then deletes it. Needs checkpoint_root (the nodes share
                input, checkpoint and model there) and deploy/trainjob-rbac.yaml.
            train_node_selector: Node labels the train task must run on, e.g.
                {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}.
            train_tolerations: Kubernetes tolerations of the train task, e.g.
                [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}].
            checkpoint_root: gs://, s3:// or mounted folder where training keeps its checkpoint,
                per pipeline run, so that a retried (preempted) train pod resumes; empty: beside
                the model output, which a lost pod loses.
            mlflow_tracking_uri: MLflow server of every task; empty: $MLFLOW_TRACKING_URI (a pod
                without either refuses to train).
            mlflow_experiment: MLflow experiment of the run.
            mlflow_secret: Kubernetes secret with MLFLOW_TRACKING_USERNAME and
                MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN; optional.
            storage_secret: Kubernetes secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
                (and optionally AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) for
                s3:// sources and checkpoints; optional.
            registered_model_name: Register the model in MLflow under this name, and make it
                the `champion` alias when it beats the champion on promotion_metric; empty: no.
            promotion_metric: Test metric that decides the promotion, e.g. ndcg@10 or hit@10;
                both models are scored on this run's test users, a tie keeps the champion.
            write_recommendations: Also write every user's top-K items as Parquet (with the
            evaluate task's CPU and memory).
            recommendations_k: Items per user in the recommendations.
            scoring_shards: Tasks that score the users for evaluation and recommendations,
                each its own pod (evaluate_cpu, evaluate_memory) with a share of the users;
                their results are merged into exactly those of one task.
            download_cpu: CPU request and limit of the download task.
            download_memory: Memory request and limit of the download task.
            sequences_cpu: CPU request and limit of the sequences task.
            sequences_memory: Memory request and limit of the sequences task.
            train_cpu: CPU request and limit of the train task.
            train_memory: Memory request and limit of the train task.
            evaluate_cpu: CPU request and limit of the evaluate task.
            evaluate_memory: Memory request and limit of the evaluate task.
        """
        # Stage 1, data: cached, so that the same source and settings are read once.
        fetched = download(
            source=source, amazon_base_url=amazon_base_url, with_metadata=with_item_titles
        )
        download_task = pod.set_up(
            fetched, "Download reviews", (download_cpu, download_memory, pod.DOWNLOAD.scratch),
            cache=True, storage_secret=storage_secret,
        )  # fmt: skip
        sequences_task = pod.set_up(
            sequences(interactions=download_task.outputs["interactions"], kcore=kcore, split=split),
            "Build sequences", (sequences_cpu, sequences_memory, pod.SEQUENCES.scratch), cache=True,
        )  # fmt: skip
        sequence_files = sequences_task.outputs["sequences"]

        # Stage 2, training: one task per trial of the sweep, the best on validation selected.
        # Not cached: a rerun is asked for to train again (the model is logged to MLflow).
        tracked = {"mlflow_tracking_uri": mlflow_tracking_uri}
        trials_task = pod.set_up(
            plan_trials(
                hparams=hparams, hparams_grid=hparams_grid, mlflow_experiment=mlflow_experiment,
                mlflow_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                promotion_metric=promotion_metric, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                **tracked,
            ),
            "Plan trials", pod.SMALL.resources, mlflow_secret=mlflow_secret,
        )  # fmt: skip
        with dsl.ParallelFor(trials_task.output, parallelism=sweep_parallelism) as trial:
            train_task = pod.set_up(
                train(
                    sequences=sequence_files, hparams=trial.hparams,
                    mlflow_experiment=mlflow_experiment,
                    mlflow_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, num_processes=gpu_count,
                    checkpoint_root=checkpoint_root,
                    pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, trial=trial.trial,
                    parent_run_id=trial.parent_run_id, train_nodes=train_nodes,
                    train_image=image_uri("train"), gpu_type=gpu_type, node_cpu=train_cpu,
                    node_memory=train_memory, mlflow_secret=mlflow_secret,
                    storage_secret=storage_secret, **tracked,
                ),
                "Train SASRec", (train_cpu, train_memory, pod.TRAIN.scratch),
                mlflow_secret=mlflow_secret, storage_secret=storage_secret,
            )  # fmt: skip
            # A retried pod resumes from checkpoint_root, in the same MLflow run.
            train_task.set_retry(**pod.TRAIN_RETRY)
            train_task.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
            pod.mount_shared_memory(train_task)
            kubernetes.add_node_selector_json(train_task, train_node_selector)
            kubernetes.add_toleration_json(train_task, train_tolerations)
        select_task = pod.set_up(
            select_trial(models=dsl.Collected(train_task.outputs["model"]), **tracked),
            "Select the best trial",
            pod.SMALL.resources,
            mlflow_secret=mlflow_secret,
        )
        best_model = select_task.outputs["model"]

        # Stage 3, the model's verdict: registered and promoted, evaluated, recommendations.
        scoring = (evaluate_cpu, evaluate_memory, pod.EVALUATE.scratch)
        secrets = {"mlflow_secret": mlflow_secret, "storage_secret": storage_secret}
        promote_task = pod.set_up(
            promote(
                model=best_model, sequences=sequence_files,
                registered_model_name=registered_model_name, promotion_metric=promotion_metric,
                **tracked,
            ),
            "Register and promote", scoring, **secrets,
        )  # fmt: skip
        shards_task = pod.set_up(
            plan_scoring_shards(scoring_shards=scoring_shards), "Plan scoring shards",
            pod.SMALL.resources,
        )  # fmt: skip
        with dsl.ParallelFor(shards_task.output) as shard:
            score_task = pod.set_up(
                score_users(
                    model=best_model, sequences=sequence_files, shard=shard,
                    scoring_shards=scoring_shards,
                ),
                "Score users", scoring,
            )  # fmt: skip
        evaluate_task = pod.set_up(
            evaluate(
                model=best_model, sequences=sequence_files,
                promotion=promote_task.outputs["promotion"],
                scores=dsl.Collected(score_task.outputs["scores"]), **tracked,
            ),
            "Evaluate", scoring, **secrets,
        )  # fmt: skip
        with dsl.If(write_recommendations == True):  # noqa: E712 - a KFP condition, not Python
            with dsl.ParallelFor(shards_task.output) as shard:
                recommend_task = pod.set_up(
                    recommend(
                        model=best_model, sequences=sequence_files, k=recommendations_k,
                        shard=shard, scoring_shards=scoring_shards,
                    ),
                    "Recommend for a shard of users", scoring, cache=None,
                )  # fmt: skip
            pod.set_up(
                merge_recommendations(shards=dsl.Collected(recommend_task.outputs["recommendations"])),
                "Recommend for every user", pod.SMALL.resources, cache=None,
            )  # fmt: skip

        # Runs however the steps before it end (an exit task; pipeline outputs cannot come from
        # inside a dsl.ExitHandler): it closes the MLflow runs that a failure left RUNNING.
        close_task = pod.set_up(
            close_runs(
                mlflow_experiment=mlflow_experiment,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **tracked,
            ),
            "Close MLflow runs", pod.SMALL.resources, mlflow_secret=mlflow_secret,
        )  # fmt: skip
        close_task.after(evaluate_task).ignore_upstream_failure()

        return PipelineOutputs(model=best_model, evaluation=evaluate_task.outputs["evaluation"])

    return sasrec_pipeline


def sweep_parallelism_from_environment() -> int:
    """$SWEEP_PARALLELISM, else the default."""
    return int(os.environ.get(SWEEP_PARALLELISM_ENV, DEFAULT_SWEEP_PARALLELISM))


sasrec_pipeline = build_pipeline(sweep_parallelism_from_environment())
