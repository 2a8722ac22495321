#!/usr/bin/python3
"""Tests tools/convert_taming_vqgan.py against checkpoints built here with torch in taming's layout.

Run with Debian's python3 (it has torch): /usr/bin/python3 tests/tools/convert_taming_vqgan_test.py
The fixture-based cases take the key set and shapes from $CLIPSERVE_FIXTURES (default: the configured
reference fixtures) and are skipped when that directory is missing, unless CLIPSERVE_FIXTURES_REQUIRED=1.
"""

import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERTER = os.path.join(ROOT, "tools", "convert_taming_vqgan.py")

_spec = importlib.util.spec_from_file_location("convert_taming_vqgan", CONVERTER)
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

DTYPE_FROM_NAME = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}

# A config unlike the fixture's, so that some cases run without fixtures: two attention levels, odd resolution.
SMALL_CONFIG = {
    "embed_dim": 4, "n_embed": 10,
    "ddconfig": {"ch": 32, "ch_mult": [1, 2, 1], "num_res_blocks": 1, "attn_resolutions": [17, 4],
                 "z_channels": 6, "resolution": 17, "in_channels": 3, "out_ch": 3, "double_z": False,
                 "dropout": 0.0},
}


def fixture_dir():
    return (os.environ.get("CLIPSERVE_FIXTURES") or os.environ.get("CLIPSERVE_DEFAULT_FIXTURES") or
            os.path.join(ROOT, "..", "shared", "fixtures", "reference-a"))


def require_fixtures(test):
    path = os.path.join(fixture_dir(), "vqgan")
    if not os.path.isdir(path):
        if os.environ.get("CLIPSERVE_FIXTURES_REQUIRED") == "1":
            test.fail(f"fixture directory {path} is missing")
        test.skipTest(f"fixture directory {path} is missing; set CLIPSERVE_FIXTURES")
    return path


def read_safetensors(path):
    """Strict reader: returns (metadata, {name: tensor}) and checks the layout the format requires."""
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= 8, "shorter than the length prefix"
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data), "header runs past the end"
    assert (8 + n) % 8 == 0, "data section is not 8-byte aligned"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    body = data[8 + n:]
    tensors, end = {}, 0
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        start, stop = entry["data_offsets"]
        assert start == end, f"{name}: gap or overlap at {start}"
        dtype = DTYPE_FROM_NAME[entry["dtype"]]
        numel = 1
        for d in entry["shape"]:
            numel *= d
        assert stop - start == numel * torch.tensor([], dtype=dtype).element_size(), f"{name}: byte length"
        flat = torch.frombuffer(bytearray(body[start:stop]), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(entry["shape"])
        end = stop
    assert end == len(body), "trailing bytes after the last tensor"
    return metadata, tensors


def taming_yaml(config, block_lists=False):
    """The YAML a taming training run writes (model.params + lossconfig + a data section)."""
    dd = config["ddconfig"]

    def flow(values):
        return "[ " + ",".join(str(v) for v in values) + " ]"

    def block(values, indent):
        return "".join(f"\n{' ' * indent}- {v}" for v in values) if values else " []"

    attn = block(dd["attn_resolutions"], 8) if block_lists else " " + flow(dd["attn_resolutions"])
    return f"""# taming-transformers config
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: {config["embed_dim"]}
    n_embed: {config["n_embed"]}
    ddconfig:
      double_z: {"True" if dd["double_z"] else "False"}
      z_channels: {dd["z_channels"]}
      resolution: {dd["resolution"]}
      in_channels: {dd["in_channels"]}
      out_ch: {dd["out_ch"]}
      ch: {dd["ch"]}
      ch_mult: {flow(dd["ch_mult"])}  # num_down = len(ch_mult)-1
      num_res_blocks: {dd["num_res_blocks"]}
      attn_resolutions:{attn}
      dropout: {dd["dropout"]}

    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: False
        disc_in_channels: 3
        disc_start: 250001
        disc_weight: 0.8
        codebook_weight: 1.0

data:
  target: main.DataModuleFromConfig
  params:
    batch_size: 12
    num_workers: 24
    train:
      target: taming.data.imagenet.ImageNetTrain
      params:
        config:
          size: 256
    validation:
      target: "taming.data.imagenet.ImageNetValidation"
"""


def random_state_dict(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=generator) for name, shape in shapes.items()}


def with_loss_keys(state_dict):
    out = dict(state_dict)
    out["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    out["loss.discriminator.main.1.num_batches_tracked"] = torch.tensor(7)
    out["loss.logvar"] = torch.zeros(())
    return out


class ConverterTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="convert_taming_vqgan_test_")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def write_inputs(self, state_dict, config, name="model", block_lists=False, wrap=True):
        ckpt = os.path.join(self.tmp, name + ".ckpt")
        torch.save({"state_dict": state_dict, "epoch": 3, "global_step": 1000} if wrap else state_dict, ckpt)
        yaml_path = os.path.join(self.tmp, name + ".yaml")
        with open(yaml_path, "w") as f:
            f.write(taming_yaml(config, block_lists))
        return ckpt, yaml_path

    def run_cli(self, *args):
        return subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True, timeout=300)

    def check_output(self, out_dir, config, state_dict, dtype=torch.float32):
        metadata, tensors = read_safetensors(os.path.join(out_dir, "model.safetensors"))
        self.assertEqual(metadata, {"format": "pt"})
        self.assertFalse([k for k in tensors if k.startswith("loss.")])
        expected = {k: v for k, v in state_dict.items() if not k.startswith("loss.")}
        self.assertEqual(sorted(tensors), sorted(expected))
        for name, t in tensors.items():
            self.assertEqual(t.dtype, dtype, name)
            self.assertEqual(tuple(t.shape), tuple(expected[name].shape), name)
            self.assertTrue(torch.equal(t, expected[name].to(dtype)), name)
        with open(os.path.join(out_dir, "config.json")) as f:
            self.assertEqual(json.load(f), config)

    def test_converts_fixture_key_set_and_drops_loss(self):
        vqgan_dir = require_fixtures(self)
        with open(os.path.join(vqgan_dir, "config.json")) as f:
            config = json.load(f)
        _, fixture = read_safetensors(os.path.join(vqgan_dir, "model.safetensors"))
        shapes = {k: tuple(v.shape) for k, v in fixture.items() if not k.startswith("loss.")}
        self.assertEqual(dict(conv.expected_shapes(config)), shapes)
        state_dict = with_loss_keys(random_state_dict(shapes))
        ckpt, yaml_path = self.write_inputs(state_dict, config)
        out_dir = os.path.join(self.tmp, "out")
        result = self.run_cli(ckpt, yaml_path, out_dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.check_output(out_dir, config, state_dict)

    def test_casts_with_dtype(self):
        state_dict = with_loss_keys(random_state_dict(conv.expected_shapes(SMALL_CONFIG), seed=1))
        ckpt, yaml_path = self.write_inputs(state_dict, SMALL_CONFIG)
        for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
            out_dir = os.path.join(self.tmp, name)
            result = self.run_cli(ckpt, yaml_path, out_dir, "--dtype", name)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.check_output(out_dir, SMALL_CONFIG, state_dict, dtype)

    def test_keeps_half_precision_input_and_accepts_bare_state_dict(self):
        shapes = conv.expected_shapes(SMALL_CONFIG)
        state_dict = {k: v.half() for k, v in random_state_dict(shapes, seed=2).items()}
        ckpt, yaml_path = self.write_inputs(state_dict, SMALL_CONFIG, wrap=False, block_lists=True)
        out_dir = os.path.join(self.tmp, "out")
        conv.convert(ckpt, yaml_path, out_dir)
        self.check_output(out_dir, SMALL_CONFIG, state_dict, torch.float16)

    def test_rejects_mismatched_checkpoints_by_name(self):
        shapes = conv.expected_shapes(SMALL_CONFIG)
        good = with_loss_keys(random_state_dict(shapes, seed=3))
        cases = []
        missing = {k: v for k, v in good.items() if not k.startswith("decoder.up.0.block.1.")}
        cases.append(("missing", missing, "decoder.up.0.block.1.conv1.weight"))
        unknown = dict(good, **{"decoder.up.0.block.9.conv1.weight": torch.zeros(1)})
        cases.append(("unknown", unknown, "decoder.up.0.block.9.conv1.weight"))
        codebook = dict(good, **{"quantize.embedding.weight": torch.zeros(SMALL_CONFIG["n_embed"] + 1, 4)})
        cases.append(("codebook", codebook, "quantize.embedding.weight is [11, 4], expected [10, 4]"))
        integer = dict(good, **{"quant_conv.bias": torch.zeros(4, dtype=torch.int64)})
        cases.append(("integer", integer, "quant_conv.bias"))
        for name, state_dict, needle in cases:
            with self.subTest(name):
                ckpt, yaml_path = self.write_inputs(state_dict, SMALL_CONFIG, name=name)
                out_dir = os.path.join(self.tmp, "out_" + name)
                result = self.run_cli(ckpt, yaml_path, out_dir)
                self.assertEqual(result.returncode, 1)
                self.assertIn(needle, result.stderr)
                self.assertFalse(os.path.exists(os.path.join(out_dir, "model.safetensors")))

    def test_rejects_config_with_missing_field(self):
        text = taming_yaml(SMALL_CONFIG).replace("      num_res_blocks: 1\n", "")
        yaml_path = os.path.join(self.tmp, "bad.yaml")
        with open(yaml_path, "w") as f:
            f.write(text)
        with self.assertRaisesRegex(conv.ConversionError, r"ddconfig\.num_res_blocks: missing"):
            conv.extract_config(conv.load_yaml(yaml_path))

    def test_yaml_subset_parser_matches_pyyaml(self):
        for block_lists in (False, True):
            text = taming_yaml(SMALL_CONFIG, block_lists)
            parsed = conv.parse_yaml_subset(text)
            self.assertEqual(conv.extract_config(parsed), SMALL_CONFIG)
            self.assertIs(parsed["model"]["params"]["lossconfig"]["params"]["disc_conditional"], False)
            self.assertEqual(parsed["data"]["params"]["validation"]["target"],
                             "taming.data.imagenet.ImageNetValidation")
            try:
                import yaml
            except ImportError:
                continue
            self.assertEqual(parsed, yaml.safe_load(text))
        sequence = "items:\n- a: 1\n  b: [2, 3]\n- plain\n"
        self.assertEqual(conv.parse_yaml_subset(sequence), {"items": [{"a": 1, "b": [2, 3]}, "plain"]})

    def test_serializer_header_layout(self):
        data = conv.serialize_safetensors({"b": torch.ones(3), "a": torch.zeros(2, dtype=torch.bfloat16)},
                                          {"format": "pt"})
        (n,) = struct.unpack("<Q", data[:8])
        self.assertEqual(n % 8, 0)
        header = json.loads(data[8:8 + n])
        self.assertEqual(header["__metadata__"], {"format": "pt"})
        # Wider dtypes first, so that each tensor is aligned for its element type.
        self.assertEqual(header["b"], {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]})
        self.assertEqual(header["a"], {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]})
        self.assertEqual(data[8 + n:8 + n + 12], struct.pack("<3f", 1, 1, 1))
        self.assertEqual(len(data), 8 + n + 16)


if __name__ == "__main__":
    unittest.main()
