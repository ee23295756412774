"""Scoring components: the users split into shards, each shard ranked by its own task."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def plan_scoring_shards(scoring_shards: int) -> list:
    """The shard numbers 0..scoring_shards - 1, for the ParallelFors of scoring tasks.

    Args:
        scoring_shards: How many tasks score the users; at least 1.
    """
    from sasrec.errors import exit_on_error
    from sasrec.evaluation.step import scoring_shards as shard_numbers

    with exit_on_error("plan-scoring-shards"):
        return shard_numbers(scoring_shards)


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def score_users(
    model: Input[Model],
    sequences: Input[Dataset],
    shard: int,
    scoring_shards: int,
    scores: Output[Dataset],
):
    """Rank one shard's held-out items by the model and the baselines.

    Args:
        model: Output of the train component.
        sequences: Output of the sequences component.
        shard: This task's shard, 0..scoring_shards - 1.
        scoring_shards: How many shards the users are split into.
        scores: Directory of the shard's ranks, merged by the evaluate component.
    """
    from sasrec.errors import exit_on_error
    from sasrec.evaluation.step import score_step

    with exit_on_error("score"):
        counts = score_step(model.path, sequences.path, scores.path, shard, scoring_shards)
    scores.metadata.update(counts)
