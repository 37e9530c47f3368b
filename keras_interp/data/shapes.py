"""Geometry of the embedded datasets' objects: five categories of parts.

Each category builder returns the object's parts in canonical coordinates:
the object seen from above, facing up (head at negative y), inside about
`[-1, 1]^2`. Parts are lists of polygons plus one landmark each; the
renderer (`keras_interp.data.renderer`) places, colours and draws them.
Categories differ in the *shape and arrangement* of their parts only:

| category | back | head | tail | wings | legs |
| --- | --- | --- | --- | --- | --- |
| Swallow | slim ellipse | disc | forked V | swept triangles | none |
| Moth | ellipse | square | short spike | fore + hind ellipses | one, forward |
| Beetle | hexagon | triangle | none | rear stubs | two, jointed |
| Dragonfly | thorax | wide oval | long, segmented | two thin bars | none |
| Plane | long rectangle | nose cone | T-tail | trapezoids | wheels |

"Left" is the object's own left, which in the upright view is image-left.
Every object is chiral: its right appendages are `chirality` times the size
of its left ones, so that a mirrored object looks different.

Every builder draws its shape parameters from `rng` in a fixed order; the
generated files depend on that order, so changing it changes the datasets
(bump the version constants in `keras_interp.data.synthetic`).
"""

import dataclasses

import numpy as np

PART_NAMES = (
    "back",
    "head",
    "tail",
    "left wing",
    "right wing",
    "left leg",
    "right leg",
)
CATEGORY_NAMES = ("Swallow", "Moth", "Beetle", "Dragonfly", "Plane")
# Relative spread of the per-instance shape parameters (uniform, +-15 %).
SHAPE_JITTER = 0.15
# Scale of the object's right appendages relative to its left (chirality).
CHIRALITY_RANGE = (0.80, 0.92)
_ELLIPSE_VERTICES = 24


@dataclasses.dataclass
class Part:
    """One part in canonical object coordinates (object in ~[-1, 1]^2).

    Attributes:
        name: a `PART_NAMES` entry.
        role: the colour role (`"body"`, `"head"`, `"tail"`, `"wing"`,
            `"leg"`); parts of one role share a colour and texture.
        polygons: list of float64 `(V, 2)` vertex arrays, `(x, y)`.
        landmark: float64 `(2,)`, the annotated point on the part.
    """

    name: str
    role: str
    polygons: list
    landmark: np.ndarray


def ellipse(cx, cy, rx, ry, angle=0.0):
    """Polygon of an ellipse centred at `(cx, cy)`, rotated by `angle`."""
    t = np.linspace(0.0, 2.0 * np.pi, _ELLIPSE_VERTICES, endpoint=False)
    points = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=-1)
    return rotate(points, angle) + (cx, cy)


def _axis_point(cx, cy, rx, angle, fraction):
    """Point `fraction` of the way from an ellipse's centre along its x axis."""
    return np.array(
        [cx + fraction * rx * np.cos(angle), cy + fraction * rx * np.sin(angle)]
    )


def _rect(cx, cy, width, height, angle=0.0):
    half = np.array([width / 2, height / 2])
    points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], "float64") * half
    return rotate(points, angle) + (cx, cy)


def _segment(p0, p1, width):
    p0, p1 = np.asarray(p0, "float64"), np.asarray(p1, "float64")
    direction = p1 - p0
    normal = np.array([-direction[1], direction[0]])
    normal *= width / 2 / max(np.linalg.norm(normal), 1e-9)
    return np.stack([p0 + normal, p1 + normal, p1 - normal, p0 - normal])


def _polyline(points, width, foot_radius=0.0):
    polygons = [
        _segment(points[i], points[i + 1], width)
        for i in range(len(points) - 1)
    ]
    if foot_radius:
        polygons.append(ellipse(*points[-1], foot_radius, foot_radius))
    return polygons


def rotate(points, angle):
    """Rotates `(..., 2)` points by `angle` radians (clockwise on screen)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.asarray(points, "float64") @ np.array([[c, s], [-s, c]])


def _mirror_x(polygons, landmark, factor, anchor):
    """The right-side copy of a left-side part: mirrored, scaled at anchor."""
    anchor = np.array([-anchor[0], anchor[1]])

    def place(points):
        points = np.asarray(points) * (-1.0, 1.0)
        return anchor + (points - anchor) * factor

    return [place(p) for p in polygons], place(landmark)


def _paired(name, role, polygons, landmark, factor, anchor):
    """Left part as given, right part mirrored and `factor` times smaller."""
    right_polygons, right_landmark = _mirror_x(
        polygons, landmark, factor, anchor
    )
    return [
        Part(f"left {name}", role, polygons, np.asarray(landmark, "float64")),
        Part(f"right {name}", role, right_polygons, right_landmark),
    ]


def _jitter(rng):
    return rng.uniform(1.0 - SHAPE_JITTER, 1.0 + SHAPE_JITTER)


def _swallow(rng, chirality):
    span, sweep, fork = _jitter(rng), rng.uniform(0.1, 0.3), _jitter(rng)
    body = Part("back", "body", [ellipse(0, 0.05, 0.16, 0.48)], (0, 0.05))
    head = Part("head", "head", [ellipse(0, -0.55, 0.17, 0.17)], (0, -0.56))
    tail = Part(
        "tail",
        "tail",
        [
            np.array(
                [
                    [-0.08, 0.42],
                    [0.08, 0.42],
                    [0.3 * fork, 1.0],
                    [0.0, 0.74],
                    [-0.3 * fork, 1.0],
                ]
            )
        ],
        (0, 0.62),
    )
    wing = np.array(
        [
            [-0.08, -0.25],
            [-0.95 * span, 0.15 + sweep],
            [-0.82 * span, 0.3 + sweep],
            [-0.08, 0.1],
        ]
    )
    wings = _paired(
        "wing", "wing", [wing], wing.mean(axis=0), chirality, (-0.08, 0.0)
    )
    return [tail, *wings, body, head]


def _moth(rng, chirality):
    fore, hind = _jitter(rng), _jitter(rng)
    fore_angle = rng.uniform(-0.5, -0.2)
    wing_polygons = [
        ellipse(-0.45, -0.12, 0.42 * fore, 0.26, fore_angle),
        ellipse(-0.32, 0.28, 0.26 * hind, 0.2, 0.3),
    ]
    wings = _paired(
        "wing",
        "wing",
        wing_polygons,
        _axis_point(-0.45, -0.12, 0.42 * fore, fore_angle, -0.3),
        chirality,
        (0.0, 0.0),
    )
    foot = np.array([-0.42, -0.62]) * _jitter(rng)
    legs = _paired(
        "leg",
        "leg",
        _polyline([(-0.1, -0.3), foot], 0.05, foot_radius=0.055),
        foot,
        chirality,
        (-0.1, -0.3),
    )
    tail = Part(
        "tail",
        "tail",
        [np.array([[-0.09, 0.48], [0.09, 0.48], [0.0, 0.8 * _jitter(rng)]])],
        (0, 0.6),
    )
    body = Part("back", "body", [ellipse(0, 0.08, 0.12, 0.45)], (0, 0.05))
    head = Part("head", "head", [_rect(0, -0.5, 0.26, 0.26)], (0, -0.52))
    return [*wings, *legs, tail, body, head]


def _beetle(rng, chirality):
    width = 0.42 * _jitter(rng)
    angles = np.deg2rad(np.arange(0, 360, 60))
    hexagon = np.stack(
        [width * np.cos(angles), 0.1 + 0.5 * np.sin(angles)], axis=-1
    )
    body = Part("back", "body", [hexagon], (0, 0.1))
    head = Part(
        "head",
        "head",
        [np.array([[-0.2, -0.36], [0.2, -0.36], [0.0, -0.8 * _jitter(rng)]])],
        (0, -0.5),
    )
    stub_angle = rng.uniform(0.3, 0.7)
    wings = _paired(
        "wing",
        "wing",
        [_rect(-0.4, 0.52, 0.15, 0.45 * _jitter(rng), stub_angle)],
        (-0.43, 0.56),
        chirality,
        (-0.25, 0.4),
    )
    reach = _jitter(rng)
    front = [(-0.3, -0.05), (-0.75 * reach, -0.22), (-0.85 * reach, -0.6)]
    rear = [(-0.3, 0.3), (-0.72 * reach, 0.42), (-0.8 * reach, 0.85)]
    legs = _paired(
        "leg",
        "leg",
        _polyline(front, 0.05, 0.05) + _polyline(rear, 0.05, 0.05),
        front[-1],
        chirality,
        (-0.3, 0.1),
    )
    return [*legs, *wings, body, head]


def _dragonfly(rng, chirality):
    length = _jitter(rng)
    a1, a2 = rng.uniform(-0.2, 0.0), rng.uniform(0.0, 0.2)
    wing_polygons = [
        ellipse(-0.5, -0.58, 0.46 * length, 0.09, a1),
        ellipse(-0.5, -0.36, 0.44 * length, 0.085, a2),
    ]
    wings = _paired(
        "wing",
        "wing",
        wing_polygons,
        _axis_point(-0.5, -0.58, 0.46 * length, a1, -0.3),
        chirality,
        (0.0, -0.47),
    )
    segments = np.linspace(-0.22, 1.0 * _jitter(rng), 7)
    tail = Part(
        "tail",
        "tail",
        [ellipse(0, y, 0.06, 0.1) for y in segments],
        (0, segments[3]),
    )
    body = Part("back", "body", [ellipse(0, -0.47, 0.11, 0.2)], (0, -0.47))
    head = Part("head", "head", [ellipse(0, -0.78, 0.17, 0.12)], (0, -0.8))
    return [*wings, tail, body, head]


def _plane(rng, chirality):
    span, chord = _jitter(rng), _jitter(rng)
    wing = np.array(
        [
            [-0.08, -0.2],
            [-0.95 * span, 0.12],
            [-0.95 * span, 0.12 + 0.16 * chord],
            [-0.08, 0.1 * chord],
        ]
    )
    wings = _paired(
        "wing",
        "wing",
        [wing],
        (wing[0] + wing[1] + wing[2] + wing[3]) / 4,
        chirality,
        (-0.08, 0.0),
    )
    legs = _paired(
        "leg",
        "leg",
        [
            _rect(-0.2, -0.45, 0.1, 0.16),
            _segment((-0.09, -0.45), (-0.2, -0.45), 0.03),
        ],
        (-0.2, -0.45),
        chirality,
        (-0.09, -0.45),
    )
    body = Part("back", "body", [_rect(0, 0, 0.18, 1.5)], (0, 0.0))
    tail_span = _jitter(rng)
    tail = Part(
        "tail",
        "tail",
        [_rect(0, 0.72, 0.6 * tail_span, 0.13), _rect(0, 0.68, 0.05, 0.2)],
        (0, 0.72),
    )
    head = Part(
        "head",
        "head",
        [
            np.array([[-0.09, -0.74], [0.09, -0.74], [0.0, -1.0]]),
            ellipse(0, -0.58, 0.055, 0.1),
        ],
        (0, -0.8),
    )
    return [*wings, *legs, body, tail, head]


# One builder per `CATEGORY_NAMES` entry, in order:
# `builder(rng, chirality) -> list[Part]`, in drawing order.
CATEGORY_BUILDERS = (_swallow, _moth, _beetle, _dragonfly, _plane)
