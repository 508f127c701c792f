"""The paper's face verifier (Sec. 5.6): a Siamese network with the contrastive loss (eq. 17-19),
coupled to the attribute tasks, trained on fixed image vectors.

Each image is a fixed input vector x: the backbone's identity embedding (its pooled feature),
optionally followed by the attribute model's logits (:func:`verifier_inputs`). One shared
projection g maps x to a unit-length embedding z = g(x) / ||g(x)||; a pair's score is
-||z1 - z2|| (higher = more likely the same person). Training minimises

    L = L_c + lambda_a * L_a,

L_c the contrastive loss of eq. 17-19 (:func:`contrastive_loss`) and L_a the attribute-matching
term (:func:`attribute_matching_loss`): a linear attribute head on z must predict, from either
image of a genuine pair, the identity-invariant attributes the pair shares. The head shares g
with the verifier, which is how the attribute tasks shape the embedding ("sharing its
parameters with the attribute tasks"). lambda_a = 0 without attribute inputs is the verifier
without attributes, the other curve of Fig. 11.

Training on fixed vectors takes seconds on a CPU, so both variants can be trained and compared
(:func:`mtfap.evaluation.verification.paired_difference`) on the same pairs.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtfap.attributes import resolve_attributes
from mtfap.errors import DataError
from mtfap.evaluation.verification import best_threshold
from mtfap.io import atomic_write, write_json

# Attributes a person keeps from photo to photo. Measured on the CelebA train split in
# ../shared/data (37,540 images, 5 per person), Cohen's kappa between the labels of two images
# of one person is Male 0.98, Big_Lips 0.70, Big_Nose 0.56, Chubby 0.49, Bushy_Eyebrows 0.48,
# Arched_Eyebrows 0.46, Pointy_Nose 0.42, Oval_Face 0.42, Double_Chin 0.39. Left out: what a
# person changes over the years or by choice, however consistent in CelebA (Young 0.85, but a
# verifier must match across ages; make-up, hair, beards), what is judged rather than seen
# (Attractive), and what the photo decides: expression (Smiling 0.25, Mouth_Slightly_Open
# 0.20; High_Cheekbones 0.32 is correlated 0.67 with Smiling in these labels; Narrow_Eyes
# 0.19), accessories (Eyeglasses, Wearing_Hat) and imaging (Blurry 0.12, Pale_Skin 0.12).
INVARIANT_ATTRIBUTES: tuple[str, ...] = (
    "Male", "Big_Lips", "Big_Nose", "Chubby", "Bushy_Eyebrows", "Arched_Eyebrows",
    "Pointy_Nose", "Oval_Face", "Double_Chin",
)
FORMAT = "mtfap-verifier"
FORMAT_VERSION = 1


def invariant_attributes(probabilities, attributes, keep=INVARIANT_ATTRIBUTES) -> np.ndarray:
    """The columns ``keep`` of ``probabilities`` (n, k), whose columns are named ``attributes``.

    Unknown names in ``keep`` raise with a suggestion.
    """
    probabilities = np.asarray(probabilities)
    attributes = list(attributes)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(attributes):
        raise ValueError(f"probabilities must be (n, {len(attributes)}) for {len(attributes)} "
                         f"attribute names; got shape {probabilities.shape}")
    return probabilities[:, [attributes.index(a) for a in resolve_attributes(keep, attributes)]]


def verifier_inputs(embeddings, attribute_probabilities=None, eps: float = 1e-4) -> np.ndarray:
    """The verifier's input per image: [identity embedding, attribute logits].

    Probabilities are clipped to [eps, 1 - eps] before the logit so a confident attribute model
    does not produce infinite inputs. Without ``attribute_probabilities`` the input is the
    embedding alone.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (n, d); got shape {embeddings.shape}")
    if attribute_probabilities is None:
        return embeddings
    p = np.clip(np.asarray(attribute_probabilities, dtype=np.float64), eps, 1 - eps)
    if p.ndim != 2 or len(p) != len(embeddings):
        raise ValueError(f"attribute_probabilities must be ({len(embeddings)}, k); got {p.shape}")
    return np.concatenate([embeddings, np.log(p / (1 - p)).astype(np.float32)], axis=1)


# --------------------------------------------------------------------------------------------
# Losses

def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, same: torch.Tensor,
                     margin: float) -> torch.Tensor:
    """The contrastive loss of eq. 17-19, averaged over the N pairs of the batch.

        D_i = ||z1_i - z2_i||_2
        L_c = (1/N) sum_i [ y_i (1/2) D_i^2 + (1 - y_i) (1/2) max(0, m - D_i)^2 ]

    y_i = 1 for a genuine pair (pulled together), 0 for an impostor pair (pushed apart until
    it is at least ``margin`` m away; farther impostors cost nothing).

    Parameters
    ----------
    z1, z2 : (N, d) embeddings of the two images of each pair.
    same : (N,) bool or {0, 1}, 1 for genuine pairs.
    margin : m > 0.
    """
    same = same.to(z1.dtype)
    distance = torch.linalg.vector_norm(z1 - z2, dim=1)
    genuine = 0.5 * distance.pow(2)
    impostor = 0.5 * torch.clamp(margin - distance, min=0).pow(2)
    return (same * genuine + (1 - same) * impostor).mean()


def attribute_matching_loss(logits1: torch.Tensor, logits2: torch.Tensor, p1: torch.Tensor,
                            p2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """The attribute-matching term: each image of a genuine pair predicts what the pair shares.

    With the attribute model's probabilities p1_i, p2_i of the k invariant attributes for the
    two images, the pair's consensus q_i = (p1_i + p2_i) / 2 is the target of both images'
    attribute-head logits a1_i = h(z1_i), a2_i = h(z2_i):

        L_a = (1/N) sum_i y_i (1/2k) sum_j [ BCE(a1_ij, q_ij) + BCE(a2_ij, q_ij) ],
        BCE(a, q) = -q log sigma(a) - (1 - q) log(1 - sigma(a)).

    Impostor pairs (y_i = 0) contribute nothing, neither value nor gradient: two people need
    not differ in these attributes. The consensus averages out what one photo gets wrong
    (a turned head hides the nose), so the embedding is asked for the person's attributes,
    not the photo's.

    Parameters
    ----------
    logits1, logits2 : (N, k) attribute-head logits of the two images.
    p1, p2 : (N, k) attribute probabilities in [0, 1] from the attribute model.
    same : (N,) 1 for genuine pairs.
    """
    target = (p1 + p2) / 2
    per_entry = 0.5 * (F.binary_cross_entropy_with_logits(logits1, target, reduction="none")
                       + F.binary_cross_entropy_with_logits(logits2, target, reduction="none"))
    return (same.to(per_entry.dtype) * per_entry.mean(1)).mean()


# --------------------------------------------------------------------------------------------
# Model

class SiameseVerifier(nn.Module):
    """The shared projection of both images of a pair to a unit-length embedding.

    z = g((x - mu) / s) / ||g(.)||, with g a two-layer MLP (``hidden_dim`` > 0) or one linear
    map (``hidden_dim`` = 0), and mu, s the training inputs' mean and standard deviation
    (buffers, saved with the weights). With ``n_attributes`` > 0 a linear attribute head
    h(z) serves the attribute-matching term during training.

    ``threshold`` is the decision threshold on :meth:`score` chosen on validation pairs (NaN
    until then); ``meta`` is free-form provenance saved with the model.
    """

    def __init__(self, input_dim: int, embedding_dim: int = 128, hidden_dim: int = 256,
                 n_attributes: int = 0):
        super().__init__()
        self.input_dim, self.embedding_dim = int(input_dim), int(embedding_dim)
        self.hidden_dim, self.n_attributes = int(hidden_dim), int(n_attributes)
        self.register_buffer("input_mean", torch.zeros(self.input_dim))
        self.register_buffer("input_scale", torch.ones(self.input_dim))
        if self.hidden_dim > 0:
            self.projection = nn.Sequential(nn.Linear(self.input_dim, self.hidden_dim), nn.ReLU(),
                                            nn.Linear(self.hidden_dim, self.embedding_dim))
        else:
            self.projection = nn.Linear(self.input_dim, self.embedding_dim)
        self.attribute_head = (nn.Linear(self.embedding_dim, self.n_attributes)
                               if self.n_attributes > 0 else None)
        self.threshold = float("nan")
        self.meta: dict = {}

    def settings(self) -> dict:
        """What the constructor needs to build this architecture again."""
        return {"input_dim": self.input_dim, "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim, "n_attributes": self.n_attributes}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, input_dim) -> (N, embedding_dim) unit vectors."""
        return F.normalize(self.projection((x - self.input_mean) / self.input_scale), dim=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(x1), self.embed(x2)

    def attribute_logits(self, z: torch.Tensor) -> torch.Tensor:
        if self.attribute_head is None:
            raise ValueError("this verifier has no attribute head "
                             "(it was trained with attribute_weight 0)")
        return self.attribute_head(z)

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """-||z_a - z_b||, in [-2, 0]: higher = more likely the same person."""
        return -torch.linalg.vector_norm(self.embed(a) - self.embed(b), dim=1)


@torch.no_grad()
def score_pairs(model: SiameseVerifier, inputs, first, second,
                batch_size: int = 8192) -> np.ndarray:
    """Scores of the pairs (inputs[first[i]], inputs[second[i]]) as a float64 array."""
    model.eval()
    inputs = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    embedded = torch.cat([model.embed(inputs[i:i + batch_size])
                          for i in range(0, len(inputs), batch_size)])
    first, second = torch.as_tensor(np.asarray(first)), torch.as_tensor(np.asarray(second))
    return (-torch.linalg.vector_norm(embedded[first] - embedded[second], dim=1)).double().numpy()


# --------------------------------------------------------------------------------------------
# Training

@contextmanager
def _single_torch_thread():
    """Run the enclosed torch work on one thread, then restore the thread count.

    The verifier's matrices are small (batches of 256 x a few hundred): a second thread only
    waits for its partner. One epoch of 20,000 pairs took 7.7 s with two threads and 1.3 s with
    one (2 cores shared with a training job).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

def sample_pairs(identities, n_pairs: int, seed, genuine_fraction: float = 0.5
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random genuine and impostor pairs of rows, from the people in ``identities``.

    round(n_pairs * genuine_fraction) genuine pairs: a person with at least two images,
    uniformly, then two different images of theirs, uniformly. The rest impostor pairs: two
    different people, uniformly, then one image of each. Drawing people first keeps a person
    with hundreds of images (LFW's George_W_Bush has 530) from dominating. Draws are with
    replacement: a pair may repeat. The pairs come in random order.

    Parameters
    ----------
    identities : (n,) person of each row.
    n_pairs : number of pairs.
    seed : anything ``numpy.random.default_rng`` takes (an int, or e.g. [seed, epoch]).
    genuine_fraction : share of genuine pairs.

    Returns
    -------
    first, second : (n_pairs,) row indices; same : (n_pairs,) bool.
    """
    if not 0 <= genuine_fraction <= 1:
        raise ValueError(f"genuine_fraction must be in [0, 1]; got {genuine_fraction}")
    people, person, counts = np.unique(np.asarray(identities), return_inverse=True,
                                       return_counts=True)
    rows = np.argsort(person, kind="stable")              # the rows of each person, together
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_genuine = round(n_pairs * genuine_fraction)
    n_impostor = n_pairs - n_genuine
    eligible = np.flatnonzero(counts >= 2)
    if n_genuine and not len(eligible):
        raise ValueError("genuine pairs need a person with at least two images; none has")
    if n_impostor and len(people) < 2:
        raise ValueError("impostor pairs need at least two people")
    rng = np.random.default_rng(seed)
    who = rng.choice(eligible, n_genuine) if n_genuine else np.zeros(0, np.int64)
    a = rng.integers(counts[who])
    b = rng.integers(counts[who] - 1)
    b += b >= a
    p1 = rng.integers(len(people), size=n_impostor)
    p2 = rng.integers(len(people) - 1, size=n_impostor) if n_impostor else p1
    p2 = p2 + (p2 >= p1)
    first = np.concatenate([rows[start[who] + a], rows[start[p1] + rng.integers(counts[p1])]])
    second = np.concatenate([rows[start[who] + b], rows[start[p2] + rng.integers(counts[p2])]])
    same = np.concatenate([np.ones(n_genuine, bool), np.zeros(n_impostor, bool)])
    order = rng.permutation(n_pairs)
    return first[order], second[order], same[order]


def _check_training_inputs(inputs, identities, attributes, role: str):
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 2:
        raise ValueError(f"{role}inputs must be (n, d); got shape {inputs.shape}")
    if not np.isfinite(inputs).all():
        raise ValueError(f"{role}inputs hold {np.sum(~np.isfinite(inputs))} NaN or infinite values")
    identities = np.asarray(identities)
    if identities.shape != (len(inputs),):
        raise ValueError(f"{role}identities must have shape ({len(inputs)},); "
                         f"got {identities.shape}")
    if attributes is not None:
        attributes = np.asarray(attributes, dtype=np.float32)
        if attributes.ndim != 2 or len(attributes) != len(inputs):
            raise ValueError(f"attributes must be ({len(inputs)}, k); got shape {attributes.shape}")
        if not ((attributes >= 0) & (attributes <= 1)).all():
            raise ValueError("attributes must be probabilities in [0, 1] "
                             "(apply the sigmoid to logits)")
    return inputs, identities, attributes


def train_verifier(inputs, identities, attributes=None, *, val_inputs=None, val_identities=None,
                   embedding_dim: int = 128, hidden_dim: int = 256, margin: float = 1.0,
                   attribute_weight: float = 0.0, attribute_names=None, epochs: int = 20,
                   pairs_per_epoch: int = 20000, val_pairs: int = 4000, batch_size: int = 256,
                   lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0
                   ) -> tuple[SiameseVerifier, list[dict]]:
    """Train the Siamese verifier on fixed image vectors: L = L_c + lambda_a L_a (module docstring).

    Each epoch draws ``pairs_per_epoch`` fresh pairs (:func:`sample_pairs`, half genuine) from
    the training people and takes one Adam pass over them. With validation data, a fixed set
    of ``val_pairs`` pairs of the validation people is scored after each epoch; the epoch with
    the best validation accuracy (at its best threshold) is kept, and that threshold becomes
    ``model.threshold``. Without, the last epoch is kept. The same data and seed give the same
    model (torch's global generator is left as it was).

    Parameters
    ----------
    inputs : (n, d) image vectors (:func:`verifier_inputs`).
    identities : (n,) person of each row.
    attributes : (n, k) probabilities of the invariant attributes (:func:`invariant_attributes`),
        the targets of L_a; needed when ``attribute_weight`` > 0, unused otherwise.
    val_inputs, val_identities : validation vectors and people (other people than training).
    embedding_dim : size of z. 128, the usual size of face embeddings; the distances of a
        few thousand people fit easily.
    hidden_dim : width of the hidden layer of g; 0 for a linear g.
    margin : m of eq. 17-19. On unit vectors distances lie in [0, 2] and two random directions
        are about sqrt(2) apart; m = 1 pushes impostors to at least 60 degrees apart.
    attribute_weight : lambda_a; 0 = the verifier without attributes.
    attribute_names : names of the k columns of ``attributes``, kept in ``model.meta``.
    epochs, pairs_per_epoch, batch_size, lr, weight_decay : the optimisation (Adam).
    val_pairs : number of validation pairs.
    seed : seed of the initialisation and of every draw.

    Returns
    -------
    (model, history): the verifier (eval mode) and one dict per epoch with ``loss``,
    ``contrastive_loss``, ``attribute_loss`` (means over the epoch's pairs) and, with
    validation data, ``val_accuracy`` and ``val_threshold``.
    """
    inputs, identities, attributes = _check_training_inputs(inputs, identities, attributes, "")
    if attribute_weight < 0:
        raise ValueError(f"attribute_weight must be >= 0; got {attribute_weight}")
    if attribute_weight > 0 and attributes is None:
        raise ValueError("attribute_weight > 0 needs the attributes (n, k) probabilities that "
                         "the attribute-matching term asks the embedding to predict")
    if margin <= 0 or epochs < 1 or pairs_per_epoch < 1:
        raise ValueError("margin, epochs and pairs_per_epoch must be positive")
    validate = val_inputs is not None
    if validate:
        val_inputs, val_identities, _ = _check_training_inputs(val_inputs, val_identities, None,
                                                               "val_")
        if val_inputs.shape[1] != inputs.shape[1]:
            raise ValueError(f"val_inputs have {val_inputs.shape[1]} columns, "
                             f"inputs {inputs.shape[1]}")
        val_first, val_second, val_same = sample_pairs(val_identities, val_pairs, [seed, 1])
    use_attributes = attribute_weight > 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiameseVerifier(inputs.shape[1], embedding_dim, hidden_dim,
                                attributes.shape[1] if use_attributes else 0)
    model.input_mean.copy_(torch.from_numpy(inputs.mean(0)))
    scale = inputs.std(0)
    model.input_scale.copy_(torch.from_numpy(np.where(scale > 1e-8, scale, 1.0)))
    model.meta = {"margin": margin, "attribute_weight": attribute_weight, "epochs": epochs,
                  "pairs_per_epoch": pairs_per_epoch, "batch_size": batch_size, "lr": lr,
                  "weight_decay": weight_decay, "seed": seed, "n_train_images": len(inputs),
                  "n_train_people": len(np.unique(identities)),
                  "attribute_names": list(attribute_names) if use_attributes and attribute_names
                  is not None else None}
    x = torch.from_numpy(inputs)
    targets = torch.from_numpy(attributes) if use_attributes else None
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history, best_accuracy, best_state = [], -1.0, None
    with _single_torch_thread():
        for epoch in range(1, epochs + 1):
            pairs = sample_pairs(identities, pairs_per_epoch, [seed, 0, epoch])
            losses = _train_epoch(model, optimiser, x, targets, pairs, batch_size, margin,
                                  attribute_weight)
            record = {"epoch": epoch, **losses}
            if validate:
                scores = score_pairs(model, val_inputs, val_first, val_second)
                threshold, accuracy = best_threshold(scores, val_same)
                record.update(val_accuracy=accuracy, val_threshold=threshold)
                if accuracy > best_accuracy:
                    best_accuracy, model.threshold = accuracy, threshold
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                    model.meta["best_epoch"] = epoch
            history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def _train_epoch(model, optimiser, x, targets, pairs, batch_size, margin, attribute_weight) -> dict:
    """One pass of Adam over ``pairs``; the mean losses per pair."""
    model.train()
    first, second, same = (torch.from_numpy(a) for a in pairs)
    totals = np.zeros(3)
    for at in range(0, len(same), batch_size):
        i, j, y = (a[at:at + batch_size] for a in (first, second, same))
        z1, z2 = model(x[i], x[j])
        contrastive = contrastive_loss(z1, z2, y, margin)
        matching = torch.zeros(())
        if targets is not None:
            logits1, logits2 = model.attribute_logits(z1), model.attribute_logits(z2)
            matching = attribute_matching_loss(logits1, logits2, targets[i], targets[j], y)
        loss = contrastive + attribute_weight * matching
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        totals += len(y) * np.array([loss.item(), contrastive.item(), matching.item()])
    return dict(zip(("loss", "contrastive_loss", "attribute_loss"), (totals / len(same)).tolist()))


# --------------------------------------------------------------------------------------------
# Files

def _verifier_files(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_verifier(model: SiameseVerifier, path: str | Path) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` (weights and input statistics) and ``NAME.json`` (settings,
    threshold, meta) for ``path`` = NAME, NAME.safetensors or NAME.json. No pickle."""
    from safetensors.torch import save_file

    weights, settings = _verifier_files(path)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    write_json(settings, {"format": FORMAT, "version": FORMAT_VERSION, "settings": model.settings(),
                          "threshold": model.threshold, "meta": model.meta})
    return weights, settings


def load_verifier(path: str | Path) -> SiameseVerifier:
    """Read what :func:`save_verifier` wrote; the model comes back in eval mode.

    Raises
    ------
    DataError
        A file is missing, is not a verifier's, or the weights do not fit the settings.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, settings_path = _verifier_files(path)
    hint = "save_verifier writes NAME.safetensors and NAME.json side by side"
    for file in (settings_path, weights):
        if not file.is_file():
            raise DataError("verifier file not found", file, hint=hint)
    try:
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not a JSON file ({exc})", settings_path, hint=hint) from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or "settings" not in saved:
        raise DataError(f"not a verifier's settings (no \"format\": \"{FORMAT}\")", settings_path,
                        hint=hint)
    if saved.get("version", 0) > FORMAT_VERSION:
        raise DataError(f"written by a newer mtfap (format version {saved['version']})",
                        settings_path, hint="update mtfap")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"not a readable safetensors file ({exc})", weights, hint=hint) from None
    model = SiameseVerifier(**saved["settings"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).strip().splitlines()[1:3])[:200]
        raise DataError(f"weights do not fit the settings beside them: {detail}", weights,
                        hint="the two files must come from one save_verifier call") from None
    threshold = saved.get("threshold")
    model.threshold = float("nan") if threshold is None else float(threshold)
    model.meta = dict(saved.get("meta") or {})
    return model.eval()
