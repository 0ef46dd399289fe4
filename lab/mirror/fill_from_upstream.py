#!/usr/bin/env python3
"""Fills the offline mirror layout from the real upstream downloads, for air-gapped users with a staging host.

Same pins (versions.yml), same layout and checksum files as build.py, but the files come from
dl.k8s.io, GitHub releases and get.helm.sh, verified against upstream's published checksums,
and the images are pulled from their registries with docker and saved as build.py saves them.
This machine has no route to those hosts, so only `--dry-run` is exercised here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # the sibling builder holds the layout rules
import yaml


@dataclass(frozen=True)
class Download:
    """One upstream file, the upstream checksum file that vouches for it, and where both go."""

    rel: PurePosixPath
    upstream_checksum: PurePosixPath
    checksum_rel: PurePosixPath


def downloads(versions: Mapping[str, str], arch: str = build.ARCH) -> list[Download]:
    k8s = build.pin(versions, "kubernetes_version")
    out: list[Download] = []
    for name in build.K8S_ALL_CMDS:
        rel = build.k8s_binary_path(k8s, name, arch)
        out.append(Download(rel, build.checksum_path(rel), build.checksum_path(rel)))
    runc = build.runc_binary_path(build.pin(versions, "runc_version"), arch)
    runc_sums = build.runc_checksum_path(build.pin(versions, "runc_version"))
    pairs = [
        (build.containerd_tarball_path(build.pin(versions, "containerd_version"), arch), ".sha256sum"),
        (build.cni_tarball_path(build.pin(versions, "cni_plugins_version"), arch), ".sha256"),
        (build.crictl_tarball_path(build.pin(versions, "crictl_version"), arch), ".sha256"),
        (build.helm_tarball_path(build.pin(versions, "helm_version"), arch), ".sha256sum"),
    ]
    out.append(Download(runc, runc_sums, runc_sums))
    out += [Download(rel, build.checksum_path(rel, sfx), build.checksum_path(rel, sfx)) for rel, sfx in pairs]
    return out


def gitops_files(versions: Mapping[str, str]) -> list[PurePosixPath]:
    """The Cilium chart repository's index and chart, and ArgoCD's manifests (no checksum files)."""
    chart = build.cilium_chart_path(build.pin(versions, "cilium_version"))
    argocd = build.pin(versions, "argocd_version")
    return [
        chart.with_name("index.yaml"),
        chart,
        *(build.argocd_manifest_path(argocd, variant) for variant in build.ARGOCD_MANIFESTS),
    ]


def chart_digest(index: object, name: str, version: str) -> str:
    """The sha256 a Helm repository index lists for one chart version."""
    entries = index.get("entries", {}).get(name, []) if isinstance(index, dict) else []
    for entry in entries:
        if str(entry.get("version")) == version and entry.get("digest"):
            return str(entry["digest"])
    raise build.BuildError(f"the chart repository index lists no {name} {version}")


def fill_gitops_file(files: Path, rel: PurePosixPath, versions: Mapping[str, str]) -> None:
    """Upstream publishes no checksum files for these; the chart is checked against its index."""
    dest = files / rel
    if rel.suffix == ".tgz":
        index = yaml.safe_load((files / rel.with_name("index.yaml")).read_text(encoding="utf-8"))
        want = chart_digest(index, "cilium", build.pin(versions, "cilium_version"))
        if not (dest.is_file() and build.sha256_file(dest) == want):
            build.say(f"fetching https://{rel}")
            fetch(f"https://{rel}", dest)
        if build.sha256_file(dest) != want:
            dest.unlink()
            raise build.BuildError(f"checksum mismatch for https://{rel}: the index says {want}")
        return
    build.say(f"fetching https://{rel}")
    fetch(f"https://{rel}", dest)


def images(versions: Mapping[str, str]) -> list[str]:
    k8s = build.pin(versions, "kubernetes_version")
    refs = [f"registry.k8s.io/{c}:v{k8s}" for c in build.K8S_CP_CMDS]
    refs += [
        f"registry.k8s.io/etcd:{build.pin(versions, 'etcd_version')}-0",
        f"registry.k8s.io/pause:{build.pin(versions, 'pause_version')}",
        f"registry.k8s.io/coredns/coredns:v{build.pin(versions, 'coredns_version')}",
    ]
    return refs


def expected_sum(text: str, filename: str) -> str:
    """The sum for `filename` from an upstream checksum file (bare digest or sha256sum lines)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0]
    for parts in lines:
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0]
    raise build.BuildError(f"no checksum for {filename} in the upstream checksum file")


def fetch(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as fh:
        while chunk := resp.read(1 << 20):
            fh.write(chunk)
    os.replace(tmp, dest)


def fill_file(files: Path, item: Download) -> None:
    dest = files / item.rel
    sums_url = f"https://{item.upstream_checksum}"
    with urllib.request.urlopen(sums_url, timeout=60) as resp:
        want = expected_sum(resp.read().decode(), dest.name)
    if not (dest.is_file() and build.sha256_file(dest) == want):
        build.say(f"fetching https://{item.rel}")
        fetch(f"https://{item.rel}", dest)
    got = build.sha256_file(dest)
    if got != want:
        dest.unlink()
        raise build.BuildError(f"checksum mismatch for https://{item.rel}: got {got}, upstream says {want}")
    # One line per file in sha256sum format, the same as build.py writes.
    (files / item.checksum_rel).write_text(build.checksum_line(want, dest.name), encoding="utf-8")


def fill_image(images_dir: Path, ref: str) -> None:
    images_dir.mkdir(parents=True, exist_ok=True)
    build.say(f"pulling {ref}")
    subprocess.run(["docker", "pull", "--platform", f"linux/{build.ARCH}", ref], check=True)
    subprocess.run(["docker", "save", "--output", str(images_dir / build.image_tar_name(ref)), ref], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print what would be fetched, fetch nothing")
    parser.add_argument("--no-images", action="store_true", help="files only (no docker needed)")
    args = parser.parse_args(argv)
    layout = build.Layout(build.cache_root(os.environ))
    try:
        versions = build.read_versions()
        for item in downloads(versions):
            if args.dry_run:
                print(f"https://{item.rel} -> {layout.files / item.rel} (+ {item.checksum_rel.name})")
            else:
                fill_file(layout.files, item)
        # In order: the chart repository's index before the chart it vouches for.
        for rel in gitops_files(versions):
            if args.dry_run:
                print(f"https://{rel} -> {layout.files / rel}")
            else:
                fill_gitops_file(layout.files, rel, versions)
        for ref in [] if args.no_images else images(versions):
            if args.dry_run:
                print(f"docker pull {ref} -> {layout.images / build.image_tar_name(ref)}")
            else:
                fill_image(layout.images, ref)
    except (build.BuildError, OSError, subprocess.CalledProcessError) as exc:
        build.say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
