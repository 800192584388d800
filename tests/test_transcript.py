"""Layer 2: the full-round transcript. Fixed keys and randomness give the exact bytes of every
message (5 clients, one dropout after ShareKeys), and the vectors in protocol_spec/ are current."""

import importlib.util
import subprocess
import sys

from secagg import codec

from conftest import VECTORS, load_vectors


def _generator():
    spec = importlib.util.spec_from_file_location("generate_vectors", VECTORS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transcript_bytes_match_the_vector():
    vector = load_vectors("transcript.json")
    frames, report = _generator().run_transcript()
    assert len(frames) == len(vector["frames"])
    for i, ((direction, sender, recipient, frame), expected) in enumerate(zip(frames, vector["frames"])):
        assert (direction, sender, recipient) == (expected["direction"], expected["sender"], expected["recipient"]), i
        assert frame.hex() == expected["frame"], f"frame {i} ({expected['type']}) differs"
    assert [int(v) for v in report.result.ring_sum] == vector["ring_sum"]
    assert list(report.result.contributors) == vector["contributors"]


def test_transcript_frames_decode_to_their_types_and_reencode():
    for f in load_vectors("transcript.json")["frames"]:
        msg = codec.decode(bytes.fromhex(f["frame"]))
        assert msg.name == f["type"]
        assert codec.encode(msg).hex() == f["frame"]


def test_transcript_covers_every_round_and_the_dropout():
    vector = load_vectors("transcript.json")
    types = [f["type"] for f in vector["frames"]]
    for t in ("AdvertiseKeysRequest", "AdvertiseKeys", "ShareKeysRequest", "ShareKeys",
              "MaskedInputRequest", "MaskedInput", "UnmaskRequest", "UnmaskResponse"):
        assert t in types
    assert types.count("MaskedInput") == 4 and 4 not in vector["contributors"]
    # Survivors were asked for client 4's key shares.
    unmask = [codec.decode(bytes.fromhex(f["frame"])) for f in vector["frames"] if f["type"] == "UnmaskResponse"]
    assert all(any(s.peer == 4 for s in m.key_shares) for m in unmask)


def test_all_generated_vectors_are_current():
    out = subprocess.run([sys.executable, str(VECTORS / "generate.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_independent_checker_recomputes_every_masked_input():
    """check_transcript.py uses only the standard library and cryptography (no secagg, no CBOR
    decoder): it recomputes each q_u, PRG(b_u) and pairwise mask from the vector's secrets."""
    script = VECTORS / "check_transcript.py"
    source = script.read_text()
    assert "secagg" not in source.split('"""', 2)[2].split("def ")[0]  # imports nothing of ours
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("matches") == 5 and "DIFFERS" not in out.stdout


def test_the_checker_notices_a_changed_frame(tmp_path):
    import json

    vector = load_vectors("transcript.json")
    masked = next(f for f in vector["frames"] if f["type"] == "MaskedInput")
    masked["frame"] = masked["frame"][:-2] + format(int(masked["frame"][-2:], 16) ^ 1, "02x")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(vector))
    out = subprocess.run([sys.executable, str(VECTORS / "check_transcript.py"), str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "DIFFERS" in out.stdout


def test_the_checker_verifies_the_authenticated_transcript_too():
    script = VECTORS / "check_transcript.py"
    out = subprocess.run([sys.executable, str(script), str(VECTORS / "transcript_authenticated.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("advert signature verifies") == 5 and "DIFFERS" not in out.stdout
