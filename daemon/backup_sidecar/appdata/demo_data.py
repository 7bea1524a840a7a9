"""The demo's fixed content: users with bow setups and guide sessions, and synthetic arrows.

Deterministic (no clocks, no randomness), so two demo runs produce the same rows. The
synthetic arrows follow the seed's demo list (Easton Axis 5mm and Carbon One, Gold Tip
Hunter XT and Velocity, Victory VAP TKO and RIP XV, Carbon Express Maxima RED and PileDriver)
and are used only when the real scraper files are absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DemoGuide:
    """A guided tuning session and its recorded steps."""

    name: str
    guide_type: str
    status: str
    started_at: str
    steps: tuple[tuple[str, str], ...]
    total_steps: int = 5

    def values(self) -> dict[str, object]:
        done = self.status == "completed"
        return {
            "guide_type": self.guide_type,
            "status": self.status,
            "current_step": len(self.steps) if done else len(self.steps) + 1,
            "total_steps": self.total_steps,
            "started_at": self.started_at,
            "completed_at": self.started_at if done else None,
        }


@dataclass(frozen=True)
class DemoSetup:
    """A bow setup with the arrow chosen for it."""

    name: str
    bow_type: str
    draw_weight: float
    draw_length: float
    arrow_length: float
    point_weight: float
    spine: int
    guides: tuple[DemoGuide, ...] = ()

    def values(self) -> dict[str, object]:
        return {
            "bow_type": self.bow_type,
            "draw_weight": self.draw_weight,
            "draw_length": self.draw_length,
            "arrow_length": self.arrow_length,
            "point_weight": self.point_weight,
            "nock_weight": 10.0,
            "fletching_weight": 15.0,
            "insert_weight": 0.0,
        }


@dataclass(frozen=True)
class DemoUser:
    google_id: str
    email: str
    name: str
    is_admin: bool
    setups: tuple[DemoSetup, ...]


_PAPER = DemoGuide(
    name="Paper tuning",
    guide_type="paper_tuning",
    status="completed",
    started_at="2025-08-02 10:15:00",
    steps=(
        ("Set up paper frame", "done"),
        ("Shoot at 6 ft", "tear: nock high"),
        ("Adjust nocking point", "lowered 1/16 in"),
        ("Re-shoot", "tear: bullet hole"),
        ("Confirm at 10 ft", "bullet hole"),
    ),
)
_BARE_SHAFT = DemoGuide(
    name="Bare shaft tuning",
    guide_type="bare_shaft",
    status="in_progress",
    started_at="2025-08-09 17:40:00",
    steps=(("Shoot fletched group at 18 m", "group 6 cm"), ("Shoot bare shafts", "impact left")),
)
_WALK_BACK = DemoGuide(
    name="Walk-back tuning",
    guide_type="walk_back",
    status="paused",
    started_at="2025-08-12 08:05:00",
    steps=(("Shoot at 10 m", "on line"),),
)

DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser(
        google_id="demo-google-0001",
        email="anna.archer@example.com",
        name="Anna Archer",
        is_admin=True,
        setups=(
            DemoSetup(
                "Hoyt target compound",
                "compound",
                60.0,
                28.5,
                28.0,
                100.0,
                400,
                guides=(_PAPER, _WALK_BACK),
            ),
            DemoSetup(
                "Indoor recurve", "recurve", 38.0, 28.0, 29.0, 120.0, 600, guides=(_BARE_SHAFT,)
            ),
        ),
    ),
    DemoUser(
        google_id="demo-google-0002",
        email="bo.bowman@example.com",
        name="Bo Bowman",
        is_admin=False,
        setups=(
            DemoSetup(
                "Elk hunting rig", "compound", 70.0, 29.0, 28.5, 125.0, 340, guides=(_PAPER,)
            ),
        ),
    ),
    DemoUser(
        google_id="demo-google-0003",
        email="cleo.fletcher@example.com",
        name="Cleo Fletcher",
        is_admin=False,
        setups=(
            DemoSetup(
                "Traditional longbow",
                "longbow",
                45.0,
                27.5,
                30.0,
                145.0,
                500,
                guides=(_BARE_SHAFT,),
            ),
        ),
    ),
)


def _spines(diameter: float, *pairs: tuple[int, float]) -> list[dict[str, Any]]:
    return [{"spine": s, "outer_diameter": diameter, "gpi_weight": g} for s, g in pairs]


def _arrow(
    model: str, material: str, arrow_type: str, spines: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "model_name": model,
        "material": material,
        "arrow_type": arrow_type,
        "description": f"Synthetic demo data for {model} (not manufacturer data).",
        "spine_specifications": spines,
    }


def _document(manufacturer: str, *arrows: dict[str, Any]) -> dict[str, Any]:
    return {"manufacturer": manufacturer, "scraped_at": "2025-08-01T00:00:00", "arrows": [*arrows]}


#: Scraper-format documents, one per manufacturer.
SYNTHETIC_ARROWS: tuple[dict[str, Any], ...] = (
    _document(
        "Easton Archery",
        _arrow("Axis 5mm", "Carbon", "hunting", _spines(0.204, (300, 10.7), (340, 9.5))),
        _arrow("Carbon One", "Carbon", "target", _spines(0.236, (500, 6.8), (600, 6.1))),
    ),
    _document(
        "Gold Tip",
        _arrow("Hunter XT", "Carbon", "hunting", _spines(0.246, (300, 8.5), (400, 7.5))),
        _arrow("Velocity", "Carbon", "hunting", _spines(0.246, (300, 7.9), (400, 7.1))),
    ),
    _document(
        "Victory Archery",
        _arrow("VAP TKO", "Carbon", "hunting", _spines(0.166, (300, 10.3), (350, 9.4))),
        _arrow("RIP XV", "Carbon", "hunting", _spines(0.245, (300, 8.7), (400, 7.7))),
    ),
    _document(
        "Carbon Express",
        _arrow("Maxima RED", "Carbon", "hunting", _spines(0.204, (250, 10.1), (350, 8.9))),
        _arrow("PileDriver", "Carbon", "hunting", _spines(0.300, (250, 11.3), (350, 10.2))),
    ),
)
