import pytest

from plotlib.layout import slug
from plotlib.sites import Location, Site, Support, coordinate_groups, neuron_sites


@pytest.mark.parametrize("text", ["h1/all", "h1/coords[3]", "h1/coords[0:8]", "h2/coords[1,5,9]", "L2@last/basis[0:4]", "h0@t3/all"])
def test_site_ids_round_trip(text):
    site = Site.parse(text)
    assert site.id == text
    assert Site.parse(site.id) == site
    assert hash(site) == hash(Site.parse(text))


def test_site_parts_and_columns():
    site = Site(Location("L2", "last"), Support("basis", (3, 1, 2)))
    assert site.id == "L2@last/basis[1:4]"
    cols = site.columns()
    assert (cols["site_layer"], cols["site_position"], cols["site_support"], cols["site_indices"]) == ("L2", "last", "basis", "1,2,3")


@pytest.mark.parametrize("bad", ["h1", "h1/coords", "h1/coords[]", "h1/pca[0:2]", "h/1/all", "@x/all", "h1/coords[2,2]"])
def test_bad_site_ids_are_rejected(bad):
    with pytest.raises(ValueError):
        Site.parse(bad)


def test_site_enumeration():
    loc = Location("h1")
    assert [s.id for s in neuron_sites(loc, 3)] == ["h1/coords[0]", "h1/coords[1]", "h1/coords[2]"]
    assert [s.id for s in coordinate_groups(loc, 10, 4)] == ["h1/coords[0:4]", "h1/coords[4:8]", "h1/coords[8:10]"]


def test_slug_keeps_wildcards():
    assert slug("Full DAS") == "full_das" and slug("PLOT-UOT") == "plot_uot"
    assert slug("cache_{split}") == "cache_{split}"
