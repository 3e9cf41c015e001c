"""dbt's lineage docs build without a warehouse (what `make docs` publishes)."""

from __future__ import annotations

import json

from sisbridge.transform import build_docs


def test_build_docs_writes_the_lineage_of_every_model(tmp_path):
    page = build_docs(tmp_path / "dbt-docs")
    assert page == tmp_path / "dbt-docs" / "static_index.html"
    html = page.read_text(encoding="utf-8")
    manifest = json.loads((tmp_path / "dbt-docs" / "manifest.json").read_text(encoding="utf-8"))
    models = {node["name"] for node in manifest["nodes"].values() if node["resource_type"] == "model"}
    assert {"users", "graduation_years", "community_memberships", "user_changes"} <= models
    assert manifest["parent_map"]["model.sisbridge.user_changes"] == [
        "model.sisbridge.community_memberships",
        "model.sisbridge.int_users_accepted",
        "model.sisbridge.stg_state__applied_memberships",
        "model.sisbridge.stg_state__applied_users",
        "model.sisbridge.users",
    ]
    # The static page embeds the manifest, so it opens from a file with no server.
    assert "int_users_accepted" in html
