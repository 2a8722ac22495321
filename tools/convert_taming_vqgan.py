#!/usr/bin/python3
"""Converts a taming-transformers VQGAN (VQModel) checkpoint to clipserve's format.

Input: a taming Lightning checkpoint (`torch.load`able; weights under `state_dict`, or a bare state dict) and
its taming YAML config (`model.params.embed_dim`, `n_embed`, `ddconfig`). Output: a directory with
`model.safetensors` (taming's state_dict keys, `loss.*` dropped) and `config.json`
(`{"embed_dim", "n_embed", "ddconfig": {...}}`), as read by server/models/vqgan (DESIGN.md §4 "VQGAN").

The checkpoint's keys and shapes are checked against the architecture the config describes (the same rule as
the C++ loader): missing, unknown and mis-shaped keys are reported by name and nothing is written.

Needs torch (Debian: python3-torch) and numpy; PyYAML is used when installed, otherwise a small parser for
the YAML subset taming's configs use. No `safetensors` package is needed: the format is written here.

    /usr/bin/python3 tools/convert_taming_vqgan.py vqgan_imagenet_f16_16384.ckpt \\
        vqgan_imagenet_f16_16384.yaml models/vqgan_imagenet_f16_16384 [--dtype float16]

Checkpoints are unpickled with `weights_only=True` where torch supports it; a checkpoint that stores other
Python objects (some Lightning versions do) needs `--trust-pickle`, which runs arbitrary code from the file:
only use it on checkpoints from a trusted source.
"""

import argparse
import collections
import json
import os
import re
import struct
import sys
import tempfile

import torch

DDCONFIG_FIELDS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "resolution",
                   "in_channels", "out_ch", "double_z", "dropout")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SAFETENSORS_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
# Same-size integer dtypes used to reach the raw bytes through numpy (which has no bfloat16).
RAW_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
MAX_NAMES = 8


class ConversionError(Exception):
    """A problem with the inputs, reported to the user without a traceback."""


# --------------------------------------------------------------------------------------------------------------
# YAML (fallback for when PyYAML is not installed): block mappings and sequences by indentation, flow lists of
# scalars, comments, plain/quoted scalars with YAML 1.1 booleans. Enough for taming's configs.

def _strip_comment(line):
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _scalar(text):
    text = text.strip()
    if text == "" or text in ("~", "null", "Null", "NULL"):
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [] if not inner else [_scalar(part) for part in inner.split(",")]
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1].strip()
        out = {}
        for part in filter(None, (p.strip() for p in inner.split(","))):
            key, _, value = part.partition(":")
            out[_scalar(key)] = _scalar(value)
        return out
    if text in ("true", "True", "TRUE", "yes", "Yes", "on", "On"):
        return True
    if text in ("false", "False", "FALSE", "no", "No", "off", "Off"):
        return False
    if re.fullmatch(r"[-+]?(0|[1-9][0-9_]*)", text):
        return int(text.replace("_", ""))
    if re.fullmatch(r"[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+", text):
        return float(text.replace("_", ""))
    return text


def parse_yaml_subset(text):
    """Parses the YAML subset described above into dicts, lists and scalars."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip() in ("---", "..."):
            continue
        line = _strip_comment(raw).rstrip()
        if line.strip():
            if "\t" in line[:len(line) - len(line.lstrip())]:
                raise ConversionError(f"YAML line {number}: tabs in indentation are not supported")
            lines.append((len(line) - len(line.lstrip(" ")), line.strip(), number))

    def parse_block(i, indent):
        if lines[i][1].startswith("- ") or lines[i][1] == "-":
            return parse_sequence(i, indent)
        return parse_mapping(i, indent)

    def parse_value(i, rest, parent_indent, number):
        # `key: value` on one line, or `key:` with a nested block (deeper, or a sequence at the same indent).
        if rest:
            return _scalar(rest), i
        if i < len(lines) and (lines[i][0] > parent_indent or
                               (lines[i][0] == parent_indent and lines[i][1].startswith("-"))):
            return parse_block(i, lines[i][0])
        return None, i

    def parse_mapping(i, indent):
        out = {}
        while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
            _, content, number = lines[i]
            match = re.match(r"""^("[^"]*"|'[^']*'|[^:]+?)\s*:(\s+|$)(.*)$""", content)
            if not match:
                raise ConversionError(f"YAML line {number}: expected `key: value`, got {content!r}")
            key = _scalar(match.group(1))
            out[key], i = parse_value(i + 1, match.group(3), indent, number)
        if i < len(lines) and lines[i][0] > indent:
            raise ConversionError(f"YAML line {lines[i][2]}: unexpected indentation")
        return out, i

    def parse_sequence(i, indent):
        out = []
        while i < len(lines) and lines[i][0] == indent and (lines[i][1].startswith("- ") or lines[i][1] == "-"):
            _, content, number = lines[i]
            item = content[1:].strip()
            if not item:
                value, i = parse_value(i + 1, "", indent, number)
            elif re.match(r"""^("[^"]*"|'[^']*'|[^:\[{]+?)\s*:(\s+|$)""", item):
                # `- key: value` starts a mapping whose other keys sit at the item's indentation.
                item_indent = indent + (len(content) - len(item))
                lines[i] = (item_indent, item, number)
                value, i = parse_mapping(i, item_indent)
            else:
                value, i = _scalar(item), i + 1
            out.append(value)
        return out, i

    if not lines:
        return None
    value, i = parse_block(0, lines[0][0])
    if i != len(lines):
        raise ConversionError(f"YAML line {lines[i][2]}: unexpected content")
    return value


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        import yaml  # Debian: python3-yaml
    except ImportError:
        return parse_yaml_subset(text)
    return yaml.safe_load(text)


# --------------------------------------------------------------------------------------------------------------
# Config and the architecture's parameter shapes (mirrors server/models/vqgan/config.cc ParameterShapes).

def _as_int(value, field):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConversionError(f"config: {field}: expected an integer, got {value!r}")
    return value


def extract_config(yaml_config):
    """taming YAML (already parsed) → our config.json dict. Accepts the full file or its `model.params`."""
    if not isinstance(yaml_config, dict):
        raise ConversionError("config: expected a YAML mapping")
    params = yaml_config
    if "model" in params:
        model = params["model"]
        target = model.get("target", "") if isinstance(model, dict) else ""
        if target and not str(target).endswith("VQModel"):
            print(f"convert_taming_vqgan: warning: model.target is {target}; only VQModel's layout is supported",
                  file=sys.stderr)
        params = model.get("params") if isinstance(model, dict) else None
        if not isinstance(params, dict):
            raise ConversionError("config: model.params: missing")
    for field in ("embed_dim", "n_embed", "ddconfig"):
        if field not in params:
            raise ConversionError(f"config: model.params.{field}: missing")
    dd = params["ddconfig"]
    if not isinstance(dd, dict):
        raise ConversionError("config: model.params.ddconfig: expected a mapping")
    out_dd = collections.OrderedDict()
    for field in DDCONFIG_FIELDS:
        if field not in dd:
            raise ConversionError(f"config: ddconfig.{field}: missing")
        value = dd[field]
        name = f"ddconfig.{field}"
        if field in ("ch_mult", "attn_resolutions"):
            if not isinstance(value, (list, tuple)):
                raise ConversionError(f"config: {name}: expected a list of integers, got {value!r}")
            value = [_as_int(v, f"{name}[{i}]") for i, v in enumerate(value)]
        elif field == "double_z":
            if not isinstance(value, bool):
                raise ConversionError(f"config: {name}: expected a boolean, got {value!r}")
        elif field == "dropout":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConversionError(f"config: {name}: expected a number, got {value!r}")
            value = float(value)
        else:
            value = _as_int(value, name)
        out_dd[field] = value
    config = collections.OrderedDict(embed_dim=_as_int(params["embed_dim"], "embed_dim"),
                                     n_embed=_as_int(params["n_embed"], "n_embed"), ddconfig=out_dd)
    validate_config(config)
    return config


def validate_config(config):
    dd = config["ddconfig"]
    for name, value in (("embed_dim", config["embed_dim"]), ("n_embed", config["n_embed"]),
                        ("ddconfig.ch", dd["ch"]), ("ddconfig.num_res_blocks", dd["num_res_blocks"]),
                        ("ddconfig.z_channels", dd["z_channels"]), ("ddconfig.resolution", dd["resolution"]),
                        ("ddconfig.in_channels", dd["in_channels"]), ("ddconfig.out_ch", dd["out_ch"])):
        if value < 1:
            raise ConversionError(f"config: {name}: must be positive, got {value}")
    if dd["ch"] % 32:
        raise ConversionError(f"config: ddconfig.ch: must be a multiple of 32 (GroupNorm(32)), got {dd['ch']}")
    if not dd["ch_mult"] or any(m < 1 for m in dd["ch_mult"]):
        raise ConversionError("config: ddconfig.ch_mult: must be a non-empty list of positive integers")
    if dd["double_z"]:
        raise ConversionError("config: ddconfig.double_z: must be false for a VQModel")
    if not 0.0 <= dd["dropout"] < 1.0:
        raise ConversionError(f"config: ddconfig.dropout: must be in [0, 1), got {dd['dropout']}")


def expected_shapes(config):
    """Every VQModel parameter (taming's state_dict name, loss.* excluded) → shape, in registration order."""
    dd = config["ddconfig"]
    ch, mult, nrb, attn_res = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["attn_resolutions"]
    levels = len(mult)

    def conv(out, name, cin, cout, k):
        out[name + ".weight"] = (cout, cin, k, k)
        out[name + ".bias"] = (cout,)

    def norm(out, name, c):
        out[name + ".weight"] = (c,)
        out[name + ".bias"] = (c,)

    def resnet(out, name, cin, cout):
        norm(out, name + ".norm1", cin)
        conv(out, name + ".conv1", cin, cout, 3)
        norm(out, name + ".norm2", cout)
        conv(out, name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(out, name + ".nin_shortcut", cin, cout, 1)

    def attn(out, name, c):
        norm(out, name + ".norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(out, f"{name}.{part}", c, c, 1)

    out = collections.OrderedDict()
    conv(out, "encoder.conv_in", dd["in_channels"], ch, 3)
    curr_res, block_in = dd["resolution"], ch
    for i in range(levels):
        block_in = ch * (1 if i == 0 else mult[i - 1])
        block_out = ch * mult[i]
        for b in range(nrb):
            resnet(out, f"encoder.down.{i}.block.{b}", block_in, block_out)
            block_in = block_out
        if curr_res in attn_res:
            for b in range(nrb):
                attn(out, f"encoder.down.{i}.attn.{b}", block_in)
        if i != levels - 1:
            conv(out, f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            curr_res //= 2
    resnet(out, "encoder.mid.block_1", block_in, block_in)
    attn(out, "encoder.mid.attn_1", block_in)
    resnet(out, "encoder.mid.block_2", block_in, block_in)
    norm(out, "encoder.norm_out", block_in)
    conv(out, "encoder.conv_out", block_in, 2 * dd["z_channels"] if dd["double_z"] else dd["z_channels"], 3)

    # Decoder: built from the lowest resolution up (the attention test uses the config's resolution), listed by
    # level index like taming's `up.insert(0, ...)`.
    block_in = ch * mult[-1]
    curr_res = dd["resolution"] // 2 ** (levels - 1)
    conv(out, "decoder.conv_in", dd["z_channels"], block_in, 3)
    resnet(out, "decoder.mid.block_1", block_in, block_in)
    attn(out, "decoder.mid.attn_1", block_in)
    resnet(out, "decoder.mid.block_2", block_in, block_in)
    up = [None] * levels
    for i in reversed(range(levels)):
        level = up[i] = collections.OrderedDict()
        block_out = ch * mult[i]
        for b in range(nrb + 1):
            resnet(level, f"decoder.up.{i}.block.{b}", block_in, block_out)
            block_in = block_out
        if curr_res in attn_res:
            for b in range(nrb + 1):
                attn(level, f"decoder.up.{i}.attn.{b}", block_in)
        if i != 0:
            conv(level, f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            curr_res *= 2
    for level in up:
        out.update(level)
    norm(out, "decoder.norm_out", block_in)
    conv(out, "decoder.conv_out", block_in, dd["out_ch"], 3)

    out["quantize.embedding.weight"] = (config["n_embed"], config["embed_dim"])
    conv(out, "quant_conv", dd["z_channels"], config["embed_dim"], 1)
    conv(out, "post_quant_conv", config["embed_dim"], dd["z_channels"], 1)
    return out


# --------------------------------------------------------------------------------------------------------------
# Checkpoint and output.

def _names(names):
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" (and {len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")


def load_state_dict(path, trust_pickle):
    kwargs = {"map_location": "cpu"}
    if not trust_pickle:
        kwargs["weights_only"] = True
    try:
        checkpoint = torch.load(path, **kwargs)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file")
    except Exception as e:  # torch raises UnpicklingError/RuntimeError for non-weights content
        hint = "" if trust_pickle else " (if it stores other Python objects and you trust it: --trust-pickle)"
        raise ConversionError(f"{path}: cannot load checkpoint: {e}{hint}")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f"{path}: expected a Lightning checkpoint with `state_dict` or a bare state dict")
    return checkpoint


def select_tensors(state_dict, config, dtype):
    """Checks `state_dict` against the config's architecture; returns {name: tensor} without loss.*."""
    expected = expected_shapes(config)
    kept = {k: v for k, v in state_dict.items() if not k.startswith("loss.")}
    missing = [k for k in expected if k not in kept]
    unknown = sorted(k for k in kept if k not in expected)
    wrong_shape = [f"{k} is {list(kept[k].shape)}, expected {list(shape)}"
                   for k, shape in expected.items() if k in kept and tuple(kept[k].shape) != shape]
    not_float = [f"{k} ({kept[k].dtype})" for k in expected
                 if k in kept and tuple(kept[k].shape) == expected[k] and not kept[k].is_floating_point()]
    problems = []
    if missing:
        problems.append("missing keys: " + _names(missing))
    if unknown:
        problems.append("unknown keys: " + _names(unknown))
    if wrong_shape:
        problems.append("wrong shapes: " + _names(wrong_shape))
    if not_float:
        problems.append("not floating point: " + _names(not_float))
    if problems:
        raise ConversionError("checkpoint does not match the config (embed_dim {}, n_embed {}, ch_mult {}): {}".format(
            config["embed_dim"], config["n_embed"], config["ddconfig"]["ch_mult"], "; ".join(problems)))
    out = collections.OrderedDict()
    for name in expected:
        t = kept[name].detach().cpu()
        target = dtype if dtype is not None else t.dtype
        if target not in SAFETENSORS_DTYPE:  # e.g. float64 weights without --dtype
            target = torch.float32
        out[name] = t.to(target).contiguous()
    return out


def serialize_safetensors(tensors, metadata=None):
    """{name: CPU tensor} → safetensors bytes.

    Like the reference implementation: tensors ordered by element size (largest first), then name, with no gaps,
    so that every tensor starts aligned for its dtype; the header is padded with spaces so that the data section
    starts at a multiple of 8.
    """
    header = collections.OrderedDict()
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        t = tensors[name].contiguous()
        raw = t.view(RAW_VIEW[t.dtype]).numpy()
        if sys.byteorder != "little":
            raw = raw.byteswap()
        data = raw.tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)


def write_atomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def convert(checkpoint, config_path, output_dir, dtype=None, trust_pickle=False):
    """Converts; returns (config, {name: tensor}) as written. Raises ConversionError on bad inputs."""
    config = extract_config(load_yaml(config_path))
    tensors = select_tensors(load_state_dict(checkpoint, trust_pickle), config, dtype)
    os.makedirs(output_dir, exist_ok=True)
    write_atomically(os.path.join(output_dir, "model.safetensors"),
                     serialize_safetensors(tensors, {"format": "pt"}))
    write_atomically(os.path.join(output_dir, "config.json"), (json.dumps(config, indent=2) + "\n").encode())
    return config, tensors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="taming Lightning checkpoint (.ckpt) or a saved state dict")
    parser.add_argument("config", help="the checkpoint's taming YAML config")
    parser.add_argument("output_dir", help="directory for model.safetensors and config.json (created)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast the weights (default: keep their dtype)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="unpickle arbitrary Python objects (runs code from the file; trusted sources only)")
    args = parser.parse_args(argv)
    try:
        config, tensors = convert(args.checkpoint, args.config, args.output_dir,
                                  DTYPES[args.dtype] if args.dtype else None, args.trust_pickle)
    except ConversionError as e:
        print(f"convert_taming_vqgan: {e}", file=sys.stderr)
        return 1
    params = sum(t.numel() for t in tensors.values())
    print(f"convert_taming_vqgan: wrote {len(tensors)} tensors ({params} parameters, f = "
          f"{2 ** (len(config['ddconfig']['ch_mult']) - 1)}) to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
