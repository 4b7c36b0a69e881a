"""``cargohold fsck``: clean stores from real pushes, each kind of damage, repair, exit codes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests
from support.images import push_image
from support.servers import unique_repo

from tests.api.helpers import artifact_manifest, push_blob, put_manifest
from tests.api.helpers import push_image as push_generated
from tests.ops.helpers import V2, run_cli

from .helpers import blob_file, fsck, kinds, problem, repo_dir, store_config, write_link

OTHER_DIGEST = "sha256:" + "ab" * 32


def _age(path: Path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_store_pushed_by_skopeo_is_clean_and_the_json_has_its_shape(
    make_registry, images, skopeo, tmp_path
):
    root = tmp_path / "store"
    reg = make_registry(root=root)
    single, multi = images.get(301), images.get(302, multi_arch=True)
    name = unique_repo("fsck")
    skopeo.copy(single.oci_ref(), f"docker://{reg.host}/{name}:one")
    skopeo.copy(multi.oci_ref(), f"docker://{reg.host}/{name}:multi", all_images=True)
    subject = push_generated(reg.url, name, "sub")
    art = artifact_manifest(subject, "application/vnd.example.sig", b"signature")

    push_blob(reg.url, name, b"signature")
    push_blob(reg.url, name, b"{}")
    assert put_manifest(reg.url, name, art.digest, art.data, art.media_type).status_code == 201
    # deleting leaves what registry:2 leaves (tag index history): still clean
    assert requests.delete(f"{reg.url}/v2/{name}/manifests/{subject.digest}").status_code == 202

    config = store_config(tmp_path, root)
    # while the server runs: checking only reads
    code, report = fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]
    assert report["clean"] is True
    assert report["problems"] == []
    assert report["repositories"] == 1
    assert report["manifests"] >= 5  # one, the index and its two children, the artifact
    assert report["tags"] == 2
    assert report["blobs"] >= 8
    assert report["blobsVerified"] == report["blobs"]
    assert set(report) >= {
        "clean", "storage", "repair", "verifyBlobs", "repositories", "manifests", "tags",
        "blobs", "blobsVerified", "problems", "leftovers", "leftoversRemoved", "quarantine",
    }  # fmt: skip
    text = run_cli("fsck", str(config))
    assert text.stdout.strip().endswith("clean")


def _populate(make_registry, images, root: Path) -> dict[str, object]:
    reg = make_registry(root=root)
    a, b = unique_repo("fsa"), unique_repo("fsb")
    imgs = {k: images.get(seed) for k, seed in (("x", 311), ("y", 312), ("z", 313), ("w", 314))}
    push_image(reg.url, a, imgs["x"], tag="x")
    push_image(reg.url, a, imgs["y"], tag="y")
    push_image(reg.url, a, imgs["z"], tag="z")
    push_image(reg.url, b, imgs["w"], tag="w")
    reg.stop()
    return {"a": a, "b": b, "images": imgs}


def test_each_kind_of_damage_is_found_named_and_repaired(make_registry, images, tmp_path):
    root = tmp_path / "store"
    state = _populate(make_registry, images, root)
    a, b, imgs = state["a"], state["b"], state["images"]
    assert isinstance(a, str) and isinstance(b, str) and isinstance(imgs, dict)
    ra = repo_dir(root, a)
    tags = ra / "_manifests" / "tags"
    x, y, z, w = imgs["x"], imgs["y"], imgs["z"], imgs["w"]

    # 1. a tag naming a digest that is no revision anywhere
    write_link(tags / "ghost" / "current" / "link", OTHER_DIGEST)
    # 2. a tag naming a revision of another repository
    write_link(tags / "foreign" / "current" / "link", w.digest)
    # 3. a _layers link to a blob that does not exist
    missing = "sha256:" + "cd" * 32
    write_link(ra / "_layers" / "sha256" / missing[7:] / "link", missing)
    # 4. a layer x needs, unlinked from the repository
    x_layer = x.layer_digests[0]
    (ra / "_layers" / "sha256" / x_layer[7:] / "link").unlink()
    # 5. a corrupt blob: y's layer
    y_layer = y.layer_digests[0]
    corrupt = blob_file(root, y_layer)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    # 6. debris: an old temporary file and an interrupted delete's tree in the layout
    debris_file = tags / "x" / "current" / ".cargohold-tmp-0123abcd"
    debris_file.write_text("sha256:")
    debris_dir = tags / ".cargohold-tmp-feedbeef"
    (debris_dir / "current").mkdir(parents=True)
    (debris_dir / "current" / "link").write_text(z.digest)
    _age(debris_file)
    _age(debris_dir)
    # 7. a half-written revision link (empty)
    z_rev = ra / "_manifests" / "revisions" / "sha256" / z.digest[7:] / "link"
    z_rev.write_text("")
    # 8. a tag directory without current/link
    (tags / "hollow" / "index").mkdir(parents=True)

    config = store_config(tmp_path, root)
    code, report = fsck(config, "--verify-blobs")
    assert code == 1
    assert kinds(report) == sorted(
        [
            "tag-dangling",
            "tag-foreign",
            "layer-dangling",
            "reference-unlinked",
            "blob-corrupt",
            "debris",
            "debris",
            "link-invalid",
            "tag-incomplete",
        ]
    )
    p = problem(report, "tag-dangling", repository=a, tag="ghost")
    assert p["digest"] == OTHER_DIGEST and p["path"].endswith("/tags/ghost/current/link")
    p = problem(report, "tag-foreign", repository=a, tag="foreign")
    assert b in p["message"] and p["digest"] == w.digest
    p = problem(report, "layer-dangling", repository=a, digest=missing)
    assert p["path"] == f"/{V2}/repositories/{a}/_layers/sha256/{missing[7:]}/link"
    p = problem(report, "reference-unlinked", repository=a, digest=x_layer)
    assert p["neededBy"] == [f"{a}@{x.digest}"]
    p = problem(report, "blob-corrupt", digest=y_layer)
    assert p["neededBy"] == [f"{a}@{y.digest}"]
    assert p["path"] == f"/{V2}/blobs/sha256/{y_layer[7:9]}/{y_layer[7:]}/data"
    p = problem(report, "link-invalid", repository=a, digest=z.digest)
    assert p["path"].endswith(f"/revisions/sha256/{z.digest[7:]}/link")
    problem(report, "tag-incomplete", repository=a, tag="hollow")
    assert all(not p["repaired"] for p in report["problems"])
    # nothing was touched by the check
    assert (tags / "ghost").exists() and corrupt.exists() and debris_file.exists()

    code, report = fsck(config, "--verify-blobs", "--repair")
    assert code == 1  # problems were found (and mended)
    assert [p for p in report["problems"] if not p["repaired"]] == []
    assert not (tags / "ghost").exists() and not (tags / "foreign").exists()
    assert not (tags / "hollow").exists()
    assert not debris_file.exists() and not debris_dir.exists()
    assert (ra / "_layers" / "sha256" / x_layer[7:] / "link").read_text() == x_layer
    assert z_rev.read_text() == z.digest
    assert not corrupt.exists()
    quarantined = root / V2 / "_cargohold" / "quarantine" / "sha256" / y_layer[7:] / "data"
    assert quarantined.read_bytes() == bytes(data)  # moved aside, not deleted

    # What remains is what cannot be mended without the client: y's layer is gone.
    code, report = fsck(config, "--verify-blobs")
    assert code == 1
    p = problem(report, "layer-dangling", repository=a, digest=y_layer)
    assert "quarantine" in p["message"] and p["neededBy"] == [f"{a}@{y.digest}"]
    assert p["repair"] is None
    assert report["quarantine"] == [y_layer]
    assert kinds(report) == ["layer-dangling"]

    # Nothing valid was lost: x, z and w are whole; pushing y again heals the store.
    reg = make_registry(root=root)
    for name, img, tag in ((a, x, "x"), (a, z, "z"), (b, w, "w")):
        r = requests.get(
            f"{reg.url}/v2/{name}/manifests/{tag}", headers={"Accept": img.media_type}
        )
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == img.digest
        for layer in img.layer_digests:
            assert requests.get(f"{reg.url}/v2/{name}/blobs/{layer}").status_code == 200
    push_image(reg.url, a, y, tag="y")
    code, report = fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]
    assert report["quarantine"] == [y_layer]  # kept for the operator to look at


def test_a_dangling_revision_is_removed_with_the_tags_naming_it(make_registry, images, tmp_path):
    root = tmp_path / "store"
    reg = make_registry(root=root)
    name = unique_repo("fsrev")
    kept, lost = images.get(321), images.get(322)
    push_image(reg.url, name, kept, tag="kept")
    push_image(reg.url, name, lost, tag="lost")
    push_image(reg.url, name, lost, tag="lost2")
    reg.stop()
    blob_file(root, lost.digest).unlink()  # the manifest's own blob

    config = store_config(tmp_path, root)
    code, report = fsck(config)
    assert code == 1
    p = problem(report, "revision-dangling", repository=name, digest=lost.digest)
    assert p["neededBy"] == [f"{name}:lost", f"{name}:lost2"]
    assert kinds(report) == ["revision-dangling"]
    code, report = fsck(config, "--repair")
    assert code == 1
    assert sorted(kinds(report)) == ["revision-dangling", "tag-dangling", "tag-dangling"]
    tags = repo_dir(root, name) / "_manifests" / "tags"
    assert sorted(os.listdir(tags)) == ["kept"]
    assert fsck(config)[0] == 0


def test_exit_codes_and_the_lease(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    config = store_config(tmp_path, root)
    assert run_cli("fsck", str(config), check=False).returncode == 0
    missing = run_cli("fsck", str(tmp_path / "nope.yml"), check=False)
    assert missing.returncode == 2 and "configuration error" in missing.stderr
    assert run_cli("fsck", str(config), "--no-such-flag", check=False).returncode == 2

    # a running garbage collection's lease: checking goes on, repairing refuses clearly
    lease = root / V2 / "_cargohold" / "gc" / "lease"
    lease.parent.mkdir(parents=True)
    lease.write_text(json.dumps({"owner": "gc-run-1", "expires": time.time() + 600}))
    assert run_cli("fsck", str(config), check=False).returncode == 0
    busy = run_cli("fsck", str(config), "--repair", check=False)
    assert busy.returncode == 2 and "gc-run-1" in busy.stderr
    lease.write_text(json.dumps({"owner": "gc-run-1", "expires": time.time() - 1}))
    assert run_cli("fsck", str(config), "--repair", check=False).returncode == 0
    assert not lease.exists()  # released


def test_leftovers_of_interrupted_writes_are_counted_not_problems(tmp_path, make_registry):
    root = tmp_path / "store"
    reg = make_registry(root=root)
    name = unique_repo("fsleft")
    push_generated(reg.url, name, "t")
    reg.stop()
    scratch = root / V2 / "_cargohold" / "tmp"
    trash = root / V2 / "_cargohold" / "trash" / "0123"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "half").write_bytes(b"sha256:12")
    _age(scratch / "half")
    (trash / "current").mkdir(parents=True)
    (trash / "current" / "link").write_text("x")
    config = store_config(tmp_path, root)
    code, report = fsck(config)
    assert code == 0 and report["leftovers"] == 2
    code, report = fsck(config, "--repair")
    assert code == 0 and report["leftoversRemoved"] == 2
    assert not (scratch / "half").exists() and not trash.exists()


def test_an_index_child_and_a_referrers_link_are_written_back(make_registry, images, tmp_path):
    root = tmp_path / "store"
    reg = make_registry(root=root)
    name = unique_repo("fsidx")
    multi = images.get(351, multi_arch=True)
    push_image(reg.url, name, multi, tag="multi")
    subject = push_generated(reg.url, name, "sub")
    art = artifact_manifest(subject, "application/vnd.example.sig", b"sig")
    push_blob(reg.url, name, b"sig")
    push_blob(reg.url, name, b"{}")
    assert put_manifest(reg.url, name, art.digest, art.data, art.media_type).status_code == 201
    reg.stop()
    revisions = repo_dir(root, name) / "_manifests" / "revisions" / "sha256"
    child = multi.platforms[0].manifest.digest
    (revisions / child[7:] / "link").unlink()
    (revisions / child[7:]).rmdir()
    referrers = repo_dir(root, name) / "_referrers" / "sha256" / subject.digest[7:]
    link = referrers / "sha256" / art.digest[7:] / "link"
    link.unlink()

    config = store_config(tmp_path, root)
    code, report = fsck(config)
    assert code == 1
    assert kinds(report) == ["child-unlinked", "referrer-unlinked"]
    p = problem(report, "child-unlinked", repository=name, digest=child)
    assert p["neededBy"] == [f"{name}@{multi.digest}"]
    problem(report, "referrer-unlinked", repository=name, digest=art.digest)
    code, report = fsck(config, "--repair")
    assert all(p["repaired"] for p in report["problems"])
    assert (revisions / child[7:] / "link").read_text() == child
    assert link.read_text() == art.digest
    assert fsck(config)[0] == 0


def test_a_collection_waits_its_turn_while_a_repair_holds_the_lease(make_registry, tmp_path):
    from support.servers import free_port

    from tests.ops.helpers import wait_debug

    debug = f"127.0.0.1:{free_port()}"
    reg = make_registry(config={"http": {"debug": {"addr": debug}}})
    wait_debug(debug)
    lease = reg.root / V2 / "_cargohold" / "gc" / "lease"
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps({"owner": "fsck-test", "expires": time.time() + 600}))
    r = requests.post(f"http://{debug}/admin/gc?wait=true", timeout=60)
    assert r.status_code == 409 and "fsck-test" in r.text
    lease.unlink()
    assert requests.post(f"http://{debug}/admin/gc?wait=true", timeout=60).status_code == 200
