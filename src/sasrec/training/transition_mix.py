"""Mixing the training sequences' item-to-item transitions into a trained model's scores.

Where the next item depends mostly on the last one (first-order chains), counting what
followed it is hard to beat; on most real data the model wins, and a little of the counts
can still help it. `SASRec.mix_transitions` scores with
(1 - w) * softmax(model scores) + w * P(next | last item), and w is chosen here on the
validation users that early stopping uses, from a grid that starts at 0 (the model alone).
"""

import dataclasses
import logging
from collections.abc import Callable

import torch

from sasrec.model import SASRec
from sasrec.training.state import SELECTION_METRIC
from sasrec.transitions import Transitions

log = logging.getLogger(__name__)

# The weights tried, 0 first. Below 1: the model breaks the ties among an item's successors
# and ranks the items that never followed it.
TRANSITION_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

# Validation metrics of a model: `validate` of sasrec.training.train on the run's users.
Validation = Callable[[SASRec], dict[str, float]]


def with_transitions(model: SASRec, transitions: Transitions, weight: float) -> SASRec:
    """`model` (eval mode, sharing its weights) scoring with `transitions` mixed in at `weight`."""
    device = model.item_bias.device
    config = dataclasses.replace(model.config, num_transitions=len(transitions.counts))
    state = model.state_dict() | {
        "transition_starts": transitions.row_starts,
        "transition_items": transitions.next_items,
        "transition_log_probs": transitions.probabilities().log(),
        "transition_weight": torch.tensor(float(weight)),
    }
    with torch.device("meta"):  # no initialisation: every tensor comes from `state`
        mixed = SASRec(config)
    mixed.load_state_dict({k: v.to(device) for k, v in state.items()}, assign=True)
    return mixed.eval()


def choose_transition_weight(
    model: SASRec,
    transitions: Transitions,
    validation: Validation,
    weights: tuple[float, ...] = TRANSITION_WEIGHTS,
) -> tuple[SASRec, float, dict[str, float]]:
    """The weight of the best validation NDCG@10, the smallest of equals.

    Returns:
        The model to keep (`model` itself when the weight is 0), the weight, and the kept
        model's validation metrics.
    """
    mixed = with_transitions(model, transitions, 0.0)
    best_weight, best_metrics = 0.0, validation(model)
    curve = [f"0: {best_metrics[SELECTION_METRIC]:.4f}"]
    for weight in weights:
        if weight == 0.0:
            continue
        mixed.transition_weight.fill_(weight)
        metrics = validation(mixed)
        curve.append(f"{weight}: {metrics[SELECTION_METRIC]:.4f}")
        if metrics[SELECTION_METRIC] > best_metrics[SELECTION_METRIC]:
            best_weight, best_metrics = weight, metrics
    log.info("validation %s by transition weight: %s", SELECTION_METRIC, ", ".join(curve))
    if best_weight == 0.0:
        return model, 0.0, best_metrics
    mixed.transition_weight.fill_(best_weight)
    return mixed, best_weight, best_metrics
