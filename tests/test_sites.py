import pytest

from workbench.sites import SITE_KINDS, Site, SiteError, resolve_site, sites_for, validate_hook_name


@pytest.mark.parametrize("kind", list(SITE_KINDS))
def test_hook_name_round_trip(kind):
    site = Site(3, kind)
    assert Site.parse(site.hook_name) == site
    assert Site.parse(f"3.{kind}") == site


def test_parse_rejects_unknown_names_with_the_patterns():
    with pytest.raises(SiteError, match=r"Did you mean blocks\.3\.hook_resid_post "):
        Site.parse("blocks.3.hook_resid_postt")
    with pytest.raises(SiteError, match=r"blocks\.\{l\}\.mlp\.hook_post"):
        Site.parse("mlp_post")


def test_unknown_kind_suggests_close_kind():
    with pytest.raises(SiteError, match="resid_post"):
        Site(0, "resid_psot")


def test_validate_hook_name_lists_closest_valid_names(tiny_model):
    assert validate_hook_name(tiny_model, "blocks.1.hook_resid_post") == "blocks.1.hook_resid_post"
    with pytest.raises(SiteError, match=r"closest valid names: blocks\.1\.hook_resid_post"):
        validate_hook_name(tiny_model, "blocks.1.hook_resid_pst")


def test_resolve_site_checks_layer_range(tiny_model):
    with pytest.raises(SiteError, match=r"layers 0\.\.1"):
        resolve_site(tiny_model, "blocks.5.hook_resid_post")


def test_widths_follow_the_unit_kind(tiny_model):
    assert Site(0, "mlp_post").width(tiny_model) == 32
    assert Site(0, "resid_post").width(tiny_model) == 16
    assert [s.hook_name for s in sites_for(tiny_model, "mlp_post")] == ["blocks.0.mlp.hook_post",
                                                                      "blocks.1.mlp.hook_post"]
