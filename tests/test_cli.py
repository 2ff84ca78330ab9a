"""The generate command line: writes a PNG carrying its settings, refuses bad input with a message."""

from clipkit.cli import main
from clipkit.guidance.images import read_settings


def test_generate_cli_writes_png_with_settings(tmp_path, capsys):
    out = tmp_path / "red.png"
    rc = main(["run", "generate", "--prompt", "a red circle", "--steps", "2", "--size", "32", "--cutouts", "2",
               "--seed", "7", "--model", "tiny-clip", "--pretrained", "random", "--out", str(out)])
    assert rc == 0 and out.is_file()
    s = read_settings(out)["settings"]
    assert (s["method"], s["prompt"], s["seed"], s["steps"], s["model"]) == ("generate", "a red circle", 7, 2,
                                                                              "tiny-clip")
    assert "wrote" in capsys.readouterr().out


def test_generate_cli_reports_errors_without_traceback(tmp_path, capsys):
    rc = main(["run", "generate", "--prompt", " ", "--model", "tiny-clip", "--pretrained", "random",
               "--out", str(tmp_path / "x.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: empty prompt") and "Traceback" not in err
    rc = main(["run", "generate", "--model", "ViT-B-32", "--pretrained", str(tmp_path / "missing.pt"),
               "--out", str(tmp_path / "y.png")])
    assert rc == 2 and "missing.pt" in capsys.readouterr().err
    rc = main(["run", "generate", "--steps", "0", "--model", "tiny-clip", "--pretrained", "random",
               "--out", str(tmp_path / "z.png")])
    assert rc == 2 and "steps=0" in capsys.readouterr().err


def test_every_method_gets_a_generated_command_with_its_settings_as_flags(tmp_path, capsys):
    from PIL import Image

    picture = tmp_path / "in.png"
    Image.new("RGB", (40, 32), (200, 30, 30)).save(picture)
    out = tmp_path / "edited.png"
    rc = main(["run", "edit", "--image", str(picture), "--prompt", "a blue square", "--steps", "1", "--cutouts", "2",
               "--content-weight", "0.5", "--tiny", "--quiet", "--out", str(out)])
    assert rc == 0
    s = read_settings(out)["settings"]
    assert (s["method"], s["prompt"], s["content_weight"]) == ("edit", "a blue square", 0.5)
    assert main(["run", "edit", "--image", str(picture), "--tiny", "--out", str(tmp_path / "x.jpg")]) == 2
    assert "must be a .png" in capsys.readouterr().err  # refused before any work
    assert not (tmp_path / "x.jpg").exists()


def test_train_and_convert_name_what_exists(tmp_path, capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "stylizer" in err and "world-ldm" in err
    assert main(["convert", "nothing", "a", "b"]) == 2 and "enhance" in capsys.readouterr().err


def test_an_artifact_written_by_one_run_feeds_the_next_from_the_command_line(tmp_path):
    from PIL import Image

    picture = tmp_path / "in.png"
    Image.new("RGB", (48, 48), (40, 120, 200)).save(picture)
    small = ["--steps", "1", "--size", "48", "--crop-size", "16", "--num-crops", "2", "--tiny", "--quiet"]
    assert main(["run", "clipstyler", "--image", str(picture), "--prompt", "fire", *small,
                 "--out", str(tmp_path / "styled.png")]) == 0
    net = tmp_path / "styled.network.safetensors"
    assert net.is_file() and read_settings(tmp_path / "styled.png")["artifacts"]["network"]["file"] == net.name
    assert main(["run", "clipstyler", "--image", str(picture), "--network", str(net), *small,
                 "--out", str(tmp_path / "again.png")]) == 0
    assert read_settings(tmp_path / "again.png")["settings"]["mode"] == "apply"
