#!/usr/bin/env python3
"""Per-language routing of a transformers MoE model: record, analyze, compare two checkpoints.

The workflow of the paper (English, Hebrew and Japanese text through a Mixture-of-Experts
model; per-language, per-layer router statistics; a base checkpoint against a second one):

1. ``moescope.hf.attach`` hooks every MoE router of the model; each batch runs inside
   ``moescope.hf.tag([...])`` (one language per row), padding and special tokens left out;
2. the recorder's window is written as a ``moescope.snapshot/v1`` file per checkpoint;
3. ``moescope.analyze`` (= ``moescope analyze``) prints the per-language statistics of the
   base, ``moescope.diff`` (= ``moescope diff``) what changed in the second checkpoint;
   with ``--cli PATH`` (or a ``moescope`` binary on PATH) the CLI runs on the files too.

Tiny mode (the default, ``--model tiny``): a random-weight Qwen3-MoE decoder built from its
transformers config (4 layers, the first dense, 16 experts, top-2), byte-level tokens (UTF-8
bytes, no tokenizer, no network), compared with a copy whose deeper routers are perturbed; it
runs on the CPU in seconds. Real mode: ``--model Qwen/Qwen3-30B-A3B`` (or a local directory)
with its tokenizer, from the local Hugging Face cache unless ``--allow-download``, and
``--compare`` a second checkpoint.

    python examples/python/language_routing.py --out /tmp/routing
    python examples/python/language_routing.py --model Qwen/Qwen3-30B-A3B \
        --compare ./my-cpt-checkpoint --device cuda --out /tmp/routing
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
from typing import Any, Optional

import moescope
import moescope.hf
import torch

TEXTS = {
    "en": [
        "The committee will publish its report on the new water system next week.",
        "She walked to the station, bought a ticket and waited for the evening train.",
        "Mixture-of-experts models send each token to a few experts in every layer.",
        "The museum opens at nine and closes early on public holidays.",
        "Please send me the corrected figures before the meeting on Thursday.",
        "Children learn languages faster when they hear them every day at home.",
    ],
    "he": [
        "הוועדה תפרסם בשבוע הבא את הדוח שלה על מערכת המים החדשה.",
        "היא הלכה לתחנה, קנתה כרטיס וחיכתה לרכבת של הערב.",
        "מודלים של תערובת מומחים שולחים כל אסימון לכמה מומחים בכל שכבה.",
        "המוזיאון נפתח בתשע ונסגר מוקדם בחגים.",
        "בבקשה שלח לי את המספרים המתוקנים לפני הפגישה ביום חמישי.",
        "ילדים לומדים שפות מהר יותר כשהם שומעים אותן בבית כל יום.",
    ],
    "ja": [
        "委員会は来週、新しい水道システムに関する報告書を公表する。",
        "彼女は駅まで歩き、切符を買って夕方の電車を待った。",
        "専門家混合モデルは各層で各トークンを少数の専門家に送る。",
        "博物館は九時に開き、祝日は早く閉まる。",
        "木曜日の会議の前に修正した数字を送ってください。",
        "子どもは家で毎日聞く言語をより早く覚える。",
    ],
}

# Byte-level vocabulary of the tiny model: the 256 byte values, then three special tokens.
PAD, BOS, EOS = 256, 257, 258
TINY_VOCAB = 259


def tiny_model(seed: int) -> torch.nn.Module:
    """A random-weight Qwen3-MoE decoder: 4 layers (layer 0 dense), 16 experts, top-2."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.Qwen3MoeConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=4,
        mlp_only_layers=[0],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=16,
        num_experts_per_tok=2,
        max_position_embeddings=512,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        use_cache=False,
    )
    config._name_or_path = "tiny-qwen3-moe"
    model = transformers.Qwen3MoeForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for r in moescope.hf.routers(model):
            # Random init leaves a tiny model's routers near-uniform; spread their logits.
            r.module.weight.normal_(0.0, 1.0, generator=gen)
    return model


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.6) -> torch.nn.Module:
    """A second checkpoint: a copy whose routers in the deeper half are perturbed, more with
    depth (a stand-in for continued pre-training, which mostly moves the deep layers)."""
    other = copy.deepcopy(model)
    rs = moescope.hf.routers(other)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, r in enumerate(rs):
            depth_share = i / max(1, len(rs) - 1)
            if depth_share >= 0.5:
                w = r.module.weight
                w.add_(torch.randn(w.shape, generator=gen) * scale * depth_share)
    other.config._name_or_path = "tiny-qwen3-moe-perturbed"
    return other


def byte_batches(texts: dict[str, list[str]], batch_size: int):
    """(tags, input_ids, attention_mask) batches mixing the languages, right-padded."""
    rows = [(lang, [BOS] + list(t.encode("utf-8")) + [EOS], t) for lang in texts for t in texts[lang]]
    # Interleave languages so every batch is mixed.
    rows.sort(key=lambda r: texts[r[0]].index(r[2]))
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        width = max(len(ids) for _, ids, _ in chunk)
        ids = torch.full((len(chunk), width), PAD, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, (_, toks, _) in enumerate(chunk):
            ids[j, : len(toks)] = torch.tensor(toks)
            mask[j, : len(toks)] = 1
        yield [lang for lang, _, _ in chunk], [t for _, _, t in chunk], ids, mask


def tokenizer_batches(tokenizer: Any, texts: dict[str, list[str]], batch_size: int, device: str):
    rows = [(lang, t) for lang in texts for t in texts[lang]]
    rows.sort(key=lambda r: texts[r[0]].index(r[1]))
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tokenizer([t for _, t in chunk], return_tensors="pt", padding=True)
        yield (
            [lang for lang, _ in chunk],
            [t for _, t in chunk],
            enc["input_ids"].to(device),
            enc["attention_mask"].to(device),
        )


def record_model(
    model: torch.nn.Module,
    batches,
    path: str,
    *,
    skip_token_ids: list[int],
    cuda_to_cpu: bool,
) -> dict:
    """Runs every batch through the hooked model; writes and returns the snapshot."""
    recorder = moescope.hf.recorder_for(model)
    with moescope.hf.attach(model, recorder, skip_token_ids=skip_token_ids, cuda_to_cpu=cuda_to_cpu) as handle:
        for tags, texts, ids, mask in batches:
            for lang, text in zip(tags, texts):
                recorder.record_text(lang, len(text), len(text.split()))
            with moescope.hf.tag(tags), torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
    if handle.errors:
        raise RuntimeError(f"{handle.errors} forward steps were not recorded: {handle.last_error}")
    recorder.write_snapshot(path)
    return recorder.snapshot()


def load_real(name: str, device: str, allow_download: bool):
    import transformers

    kwargs = dict(local_files_only=not allow_download)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype="auto", **kwargs).to(device).eval()
    return tokenizer, model


def find_cli(explicit: Optional[str]) -> Optional[str]:
    if explicit:
        return explicit
    return shutil.which("moescope")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (default), a model name or a local directory")
    p.add_argument("--compare", help="a second checkpoint (tiny mode: a perturbed copy of the base)")
    p.add_argument("--out", default="routing-out", help="folder for the snapshots (created)")
    p.add_argument("--device", default="cpu", help="torch device of a real model (cpu, cuda)")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--seed", type=int, default=20261130, help="tiny mode: the base model's seed")
    p.add_argument("--allow-download", action="store_true", help="let transformers download a real model")
    p.add_argument("--cli", help="the moescope binary to run analyze/diff with (default: moescope on PATH)")
    p.add_argument("--reference", default="en")
    args = p.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    os.makedirs(args.out, exist_ok=True)
    base_path = os.path.join(args.out, "base.snapshot.json")
    cand_path = os.path.join(args.out, "candidate.snapshot.json")

    if args.model == "tiny":
        base = tiny_model(args.seed)
        cand = perturbed(base, args.seed + 2) if args.compare is None else None
        if cand is None:
            raise SystemExit("--compare needs a real --model; tiny mode compares with a perturbed copy")
        for model, path in ((base, base_path), (cand, cand_path)):
            record_model(
                model, byte_batches(TEXTS, args.batch_size), path, skip_token_ids=[BOS, EOS], cuda_to_cpu=False
            )
        have_candidate = True
    else:
        cuda = args.device.startswith("cuda")
        tok, base = load_real(args.model, args.device, args.allow_download)
        specials = list(tok.all_special_ids)
        record_model(
            base,
            tokenizer_batches(tok, TEXTS, args.batch_size, args.device),
            base_path,
            skip_token_ids=specials,
            cuda_to_cpu=cuda,
        )
        del base
        have_candidate = args.compare is not None
        if have_candidate:
            tok2, cand = load_real(args.compare, args.device, args.allow_download)
            record_model(
                cand,
                tokenizer_batches(tok2, TEXTS, args.batch_size, args.device),
                cand_path,
                skip_token_ids=list(tok2.all_special_ids),
                cuda_to_cpu=cuda,
            )

    print(f"snapshots: {base_path}" + (f", {cand_path}" if have_candidate else ""))
    analysis = moescope.analyze(base_path, args.reference)
    print_analysis(analysis)
    if have_candidate:
        d = moescope.diff(base_path, cand_path, args.reference)
        print_diff(d)
    cli = find_cli(args.cli)
    if cli and not (os.path.isfile(cli) and os.access(cli, os.X_OK)):
        print(f"\n(no moescope CLI at {cli}: skipping its analyze and diff)")
    elif cli:
        for cmd in ([cli, "analyze", "--format", "table", "--reference", args.reference, base_path],) + (
            ([cli, "diff", "--format", "table", "--reference", args.reference, base_path, cand_path],)
            if have_candidate
            else ()
        ):
            print("\n$ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=False)
    else:
        print(
            f"\n(the same from the CLI: moescope analyze --reference {args.reference} {base_path}"
            + (f"; moescope diff --reference {args.reference} {base_path} {cand_path}" if have_candidate else "")
            + ")"
        )
    return 0


def fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_analysis(a: dict) -> None:
    """The per-layer usage entropy and Gini per language, the deep-layer collapse score and the
    tokenization, from a moescope.analysis/v1 document."""
    model = a["model"]
    print(
        f"\n{model['name']}: {model['num_experts']} experts, top-{model['top_k']}, MoE layers "
        f"{model['layers']} (deep: {a['deep_layers']}); reference {a['reference']}"
    )
    langs = a["languages"]
    print("usage entropy, bits (Gini) per MoE layer:")
    print("  layer " + "".join(f"{lang:>16}" for lang in langs))
    rows = {(r["layer"], r["lang"]): r for r in a["layers"]}
    for layer in model["layers"]:
        cells = []
        for lang in langs:
            r = rows.get((layer, lang), {})
            cells.append(f"{fmt(r.get('usage_entropy_bits')):>9} ({fmt(r.get('gini'))})")
        print(f"  {layer:>5}{'*' if layer in a['deep_layers'] else ' '}" + "".join(f"{c:>16}" for c in cells))
    for c in a["collapse"]:
        print(
            f"collapse {c['lang']} vs {c['reference']}: score {fmt(c['score_bits'], '+.3f')} bits "
            f"(threshold {c['theta_bits']}), collapsed: {c['collapsed']}"
            + ("" if c.get("enough_tokens", True) else " (fewer deep-layer tokens than the verdict needs)")
        )
    for t in a.get("tokenization", []):
        print(f"tokens per character {t['lang']}: {fmt(t.get('tokens_per_char'))}")


def print_diff(d: dict) -> None:
    """Deep-layer entropy changes per language and the verdict, from a moescope.diff/v1 document."""
    print(f"\ndiff {d['base_model']} -> {d['candidate_model']}:")
    for r in d["layers"]:
        if r.get("deep"):
            e = r["usage_entropy_bits"]
            print(
                f"  layer {r['layer']} {r['lang']}: usage entropy {fmt(e['base'])} -> {fmt(e['candidate'])} "
                f"bits ({fmt(e['delta'], '+.3f')})"
            )
    print(f"regression: {d['regression']}" + (f" ({'; '.join(d['reasons'])})" if d.get("reasons") else ""))


if __name__ == "__main__":
    sys.exit(main())
