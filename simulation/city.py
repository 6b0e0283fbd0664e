"""The synthetic city: cells grouped into regions, households and people with IDs and names, hotels.

Cells form a 2-D grid (one square per cell tower) split into the city's counties by columns, with urban
centres where people live and work more densely; each outside region is a small cluster of cells far
away. People live in households of 1–6 (head, spouse, children, grandparents), have a home cell and, by
age, a workplace, school or kindergarten cell, a friend they visit, and perhaps a phone. Visitors (from
the high-risk origin or on business) are people too, outside the population register.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from proto import ids
from simulation.presets import Preset

ROLE_HOME, ROLE_KINDER, ROLE_SCHOOL, ROLE_WORK, ROLE_VISITOR = range(5)
CELL_ID_BASE = 10_001
EPOCH = dt.date(1970, 1, 1)

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
    "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉建国文斌宇浩凯鑫晨欣怡子涵梓轩梦琪佳雨婷博"
    "思雅俊豪宏志新海波亮林峰晓东雪琳颖慧淑珍凤琴云丹莉燕春秋阳光德福荣贵喜乐安康宁泽瑞祥嘉诚一鸣天佑若"
)
HOUSEHOLD_SIZES = np.array([0.25, 0.30, 0.21, 0.13, 0.07, 0.04])


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


@dataclass
class Cells:
    """All cells: grid cells of the city first (index = gy * grid_w + gx), then outside clusters."""

    ids: np.ndarray  # int32 cell_id
    region: np.ndarray  # int16 index into preset.regions
    x: np.ndarray  # float32 km
    y: np.ndarray
    grid_w: int
    grid_h: int
    cell_km: float
    pop_weight: np.ndarray
    job_weight: np.ndarray
    region_cells: list[np.ndarray]
    region_cdf: list[np.ndarray]  # cumulative job weights over region_cells
    station: np.ndarray  # per region: cell index
    airport: np.ndarray
    hospital: np.ndarray

    @property
    def n_grid(self) -> int:
        """Number of grid (city) cells."""
        return self.grid_w * self.grid_h

    def sample_in_regions(self, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A cell per entry, drawn by job weight (activity) within the given region indices."""
        regions = np.asarray(regions)
        out = np.empty(len(regions), dtype=np.int32)
        u = rng.random(len(regions))
        for r in np.unique(regions):
            m = regions == r
            cdf = self.region_cdf[r]
            out[m] = self.region_cells[r][np.minimum(np.searchsorted(cdf, u[m] * cdf[-1]), len(cdf) - 1)]
        return out

    def near(self, cells: np.ndarray, radius_km: float, rng: np.random.Generator) -> np.ndarray:
        """A cell near each given cell (normal displacement on the grid; anywhere in an outside region)."""
        cells = np.asarray(cells, dtype=np.int64)
        grid = cells < self.n_grid
        gx, gy = cells % self.grid_w, cells // self.grid_w
        sd = radius_km / self.cell_km
        nx = np.clip(np.rint(gx + rng.normal(0, sd, len(cells))), 0, self.grid_w - 1).astype(np.int64)
        ny = np.clip(np.rint(gy + rng.normal(0, sd, len(cells))), 0, self.grid_h - 1).astype(np.int64)
        out = (ny * self.grid_w + nx).astype(np.int32)
        if (~grid).any():
            out[~grid] = self.sample_in_regions(self.region[cells[~grid]], rng)
        return out

    def midpoint(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The grid cell halfway between two grid cells (a itself when either is outside the grid)."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        mx = (a % self.grid_w + b % self.grid_w) // 2
        my = (a // self.grid_w + b // self.grid_w) // 2
        mid = my * self.grid_w + mx
        return np.where((a < self.n_grid) & (b < self.n_grid), mid, a).astype(np.int32)

    def distance_km(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Straight-line distance between cells."""
        return np.hypot(self.x[a] - self.x[b], self.y[a] - self.y[b]).astype(np.float64)


@dataclass
class People:
    """Everyone simulated: residents (sorted by household) first, then visitors."""

    body: np.ndarray  # int64 17-digit id body
    subject_id: np.ndarray  # S18 bytes
    name: np.ndarray  # object str
    birth: np.ndarray  # int32 days since 1970
    sex: np.ndarray  # int8, 1 male
    household: np.ndarray  # int32 household index, -1 for visitors
    role: np.ndarray  # int8 ROLE_*
    region: np.ndarray  # int16 home region (county, or outside region for visitors)
    home: np.ndarray  # int32 cell index (-1 for visitors)
    work: np.ndarray  # int32 cell index of work / school / kindergarten (-1 none)
    friend: np.ndarray  # int32 person index (-1 none)
    phone: np.ndarray  # bool
    n_residents: int
    household_start: np.ndarray  # per household: first member
    household_size: np.ndarray
    household_id: np.ndarray  # per household: object str

    @property
    def n(self) -> int:
        """Number of people, residents and visitors."""
        return len(self.body)


@dataclass
class Hotels:
    """Hotels of the city: id, cell and number of rooms."""

    hotel_id: np.ndarray  # object str
    cell: np.ndarray  # int32
    rooms: np.ndarray  # int32

    @staticmethod
    def room_name(index: np.ndarray) -> np.ndarray:
        """Room names ("201", "315", ...) for room indices: 20 rooms a floor from the second floor."""
        index = np.asarray(index, dtype=np.int64)
        return np.char.add(
            (2 + index // 20).astype(str), np.char.zfill((1 + index % 20).astype(str), 2)
        ).astype(object)


@dataclass
class City:
    """The city: its cells, people and hotels."""

    cells: Cells
    people: People
    hotels: Hotels


def _peaks(
    n: int,
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    size: float,
    sharpness: float,
    peak: float,
) -> np.ndarray:
    """Density of an urban centre (cx, cy) plus a few smaller towns, over grid coordinates."""
    w = 0.12 + peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (size * sharpness) ** 2))
    for _ in range(n):
        tx, ty = rng.uniform(x.min(), x.max()), rng.uniform(y.min(), y.max())
        w += peak / 4 * np.exp(-((x - tx) ** 2 + (y - ty) ** 2) / (2 * (size * sharpness * 0.4) ** 2))
    return w


def build_cells(preset: Preset, rng: np.random.Generator) -> Cells:
    """Lay out the grid of city cells by county, urban densities, and the outside regions' clusters."""
    n_target = max(16, round(preset.persons / preset.persons_per_cell))
    h = max(4, round(np.sqrt(n_target / 2.0)))
    w = max(len(preset.counties) * 2, int(np.ceil(n_target / h)))
    shares = np.array([c.share for c in preset.counties], dtype=float)
    shares *= rng.uniform(0.85, 1.15, len(shares))
    shares /= shares.sum()
    bounds = np.concatenate([[0], np.cumsum(np.maximum(2, np.round(shares * w)).astype(int))])
    w = int(bounds[-1])
    grid_x, grid_y = np.meshgrid(np.arange(w), np.arange(h))
    gx, gy = grid_x.ravel(), grid_y.ravel()
    county = (np.searchsorted(bounds, gx, side="right") - 1).astype(np.int16)
    km = preset.cell_km
    x, y = gx * km, gy * km
    pop = np.zeros(len(gx))
    job = np.zeros(len(gx))
    for k in range(len(preset.counties)):
        m = county == k
        width = (bounds[k + 1] - bounds[k]) * km
        cx = rng.uniform(
            bounds[k] + 0.35 * (bounds[k + 1] - bounds[k]), bounds[k] + 0.65 * (bounds[k + 1] - bounds[k])
        )
        cy = rng.uniform(0.35 * h, 0.65 * h)
        size = max(width, h * km)
        pop[m] = _peaks(2, rng, x[m], y[m], cx * km, cy * km, size, 0.18, 6.0)
        job[m] = _peaks(2, rng, x[m], y[m], cx * km, cy * km, size, 0.14, 4.0)
    pop *= rng.lognormal(0, 0.4, len(pop))
    job *= rng.lognormal(0, 0.6, len(job))

    n_out = max(9, round(np.sqrt(preset.persons) / 5))
    side = int(np.ceil(np.sqrt(n_out)))
    ox, oy = np.arange(n_out) % side, np.arange(n_out) // side
    regions = [county]
    jitter = rng.uniform(-0.25, 0.25, (2, len(x))) * km
    xs, ys = [(x + jitter[0]).astype(np.float32)], [(y + jitter[1]).astype(np.float32)]
    for j, region in enumerate(preset.outside):
        regions.append(np.full(n_out, len(preset.counties) + j, dtype=np.int16))
        jx, jy = rng.uniform(-10, 10, 2)
        xs.append((region.x_km + jx + ox * 1.0 + rng.uniform(-0.3, 0.3, n_out)).astype(np.float32))
        ys.append((region.y_km + jy + oy * 1.0 + rng.uniform(-0.3, 0.3, n_out)).astype(np.float32))
    region_all = np.concatenate(regions)
    n_cells = len(region_all)
    pop_all = np.concatenate([pop, np.ones(n_cells - len(pop))])
    job_all = np.concatenate([job, np.ones(n_cells - len(job))])

    region_cells, region_cdf = [], []
    station = np.empty(len(preset.regions), dtype=np.int32)
    airport = np.empty(len(preset.regions), dtype=np.int32)
    hospital = np.empty(len(preset.regions), dtype=np.int32)
    for r in range(len(preset.regions)):
        members = np.nonzero(region_all == r)[0].astype(np.int32)
        region_cells.append(members)
        region_cdf.append(np.cumsum(job_all[members]))
        centre = members[np.argmax(job_all[members])]
        hospital[r] = centre
        station[r] = members[np.argsort(job_all[members])[-2]] if len(members) > 1 else centre
        airport[r] = members[0]
    return Cells(
        ids=(CELL_ID_BASE + np.arange(n_cells)).astype(np.int32),
        region=region_all,
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        grid_w=w,
        grid_h=h,
        cell_km=km,
        pop_weight=pop_all,
        job_weight=job_all,
        region_cells=region_cells,
        region_cdf=region_cdf,
        station=station,
        airport=airport,
        hospital=hospital,
    )


def _ages_of_household_members(sizes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ages and member positions (0 head, 1 spouse, 2–3 children, 4–5 grandparents) of every member."""
    pos = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    hh = np.repeat(np.arange(len(sizes)), sizes)
    single = sizes == 1
    ages = np.arange(18, 91)
    weight = np.where(ages < 60, 1.0, np.maximum(0.1, 1.0 - (ages - 60) / 33))
    head = rng.choice(ages, size=len(sizes), p=weight / weight.sum())
    head = np.where(single | (head >= 22), head, head + 6)
    head_m = head[hh]
    age = head_m.copy()
    age = np.where(pos == 1, np.clip(head_m + np.rint(rng.normal(0, 3, len(pos))), 18, 95), age)
    child = head_m - rng.integers(22, 36, len(pos))
    age = np.where((pos == 2) | (pos == 3), np.where(child < 0, rng.integers(0, 4, len(pos)), child), age)
    age = np.where(pos >= 4, np.minimum(head_m + rng.integers(24, 33, len(pos)), 98), age)
    return age.astype(np.int32), pos


def _names(surname_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Chinese names: a surname and one or two given characters."""
    n = len(surname_idx)
    sur = np.array(list(SURNAMES))[surname_idx]
    given = np.array(list(GIVEN))
    g1 = given[rng.integers(0, len(given), n)]
    g2 = np.where(rng.random(n) < 0.7, given[rng.integers(0, len(given), n)], "")
    return np.char.add(np.char.add(sur, g1), g2).astype(object)


def _surnames(n: int, rng: np.random.Generator) -> np.ndarray:
    """Surname indices, Zipf-like (the common surnames are far more common)."""
    w = 1.0 / np.arange(1, len(SURNAMES) + 1) ** 0.9
    return rng.choice(len(SURNAMES), size=n, p=w / w.sum())


def make_ids(prefix: np.ndarray, birth: np.ndarray, sex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unique 17-digit id bodies: region prefix, birth date YYYYMMDD, 3-digit sequence (odd for men)."""
    ymd = np.datetime_as_string(birth.astype("datetime64[D]"), unit="D")
    ymd_int = np.char.replace(ymd, "-", "").astype(np.int64)
    key = prefix.astype(np.int64) * 100_000_000 + ymd_int
    order = np.lexsort((rng.random(len(key)), sex, key))
    k_sorted, s_sorted = key[order], sex[order]
    new_group = np.r_[True, (k_sorted[1:] != k_sorted[:-1]) | (s_sorted[1:] != s_sorted[:-1])]
    starts = np.nonzero(new_group)[0]
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    offset = rng.integers(0, 150, len(starts))
    seq_sorted = 2 * (offset[np.cumsum(new_group) - 1] + rank) + np.where(s_sorted == 1, 1, 2)
    if seq_sorted.max(initial=0) > 999:
        raise ValueError("too many people share a region and birth date for 3-digit sequences")
    seq = np.empty_like(seq_sorted)
    seq[order] = seq_sorted
    return key * 1000 + seq


def build_people(
    preset: Preset, cells: Cells, n_visitors_by_origin: np.ndarray, rng: np.random.Generator
) -> People:
    """Residents in households (with homes, roles, workplaces, friends, phones), then visitors."""
    n_res = preset.persons
    n_counties = len(preset.counties)
    draw = rng.choice(6, size=int(n_res / 2.6 * 1.1) + 10, p=HOUSEHOLD_SIZES) + 1
    cut = np.searchsorted(np.cumsum(draw), n_res)
    sizes = draw[: cut + 1].copy()
    sizes[-1] -= sizes.sum() - n_res
    sizes = sizes[sizes > 0]
    shares = np.array([c.share for c in preset.counties])
    hh_county = np.sort(rng.choice(n_counties, size=len(sizes), p=shares / shares.sum()))
    hh_home = np.empty(len(sizes), dtype=np.int32)
    u = rng.random(len(sizes))
    for k in range(n_counties):
        m = hh_county == k
        members = cells.region_cells[k]
        cdf = np.cumsum(cells.pop_weight[members])
        hh_home[m] = members[np.minimum(np.searchsorted(cdf, u[m] * cdf[-1]), len(cdf) - 1)]
    age, pos = _ages_of_household_members(sizes, rng)
    hh = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    head_sex = rng.integers(0, 2, len(sizes))
    sex = rng.integers(0, 2, n_res)
    sex = np.where(pos == 0, head_sex[hh], sex)
    sex = np.where(pos == 1, 1 - head_sex[hh], sex)
    sex = np.where(pos == 4, 1, np.where(pos == 5, 0, sex)).astype(np.int8)
    hh_surname = _surnames(len(sizes), rng)
    surname = np.where((pos == 1) | (pos == 5), _surnames(n_res, rng), hh_surname[hh])
    region = hh_county[hh].astype(np.int16)
    home = hh_home[hh]

    # roles and places by age
    r = rng.random(n_res)
    role = np.full(n_res, ROLE_HOME, dtype=np.int8)
    role[(age >= 3) & (age <= 5) & (r < 0.8)] = ROLE_KINDER
    role[(age >= 6) & (age <= 18)] = ROLE_SCHOOL
    role[(age >= 19) & (age <= 22)] = np.where(r[(age >= 19) & (age <= 22)] < 0.4, ROLE_SCHOOL, ROLE_WORK)
    retire = np.where(sex == 1, 60, 55)
    role[(age >= 23) & (age < retire) & (r < 0.8)] = ROLE_WORK
    work = np.full(n_res, -1, dtype=np.int32)
    is_work = role == ROLE_WORK
    choice = rng.random(n_res)
    other_county = (region + rng.integers(1, max(n_counties, 2), n_res)) % n_counties
    work_region = np.where(choice < 0.1, other_county, region)
    work[is_work] = cells.sample_in_regions(work_region[is_work], rng)
    local = is_work & (choice > 0.75)
    work[local] = cells.near(home[local], 2.0, rng)
    for role_id, block in ((ROLE_SCHOOL, 3), (ROLE_KINDER, 2)):
        m = role == role_id
        gx = np.minimum((home[m] % cells.grid_w) // block * block + block // 2, cells.grid_w - 1)
        gy = np.minimum((home[m] // cells.grid_w) // block * block + block // 2, cells.grid_h - 1)
        work[m] = (gy * cells.grid_w + gx).astype(np.int32)
    county_start = np.searchsorted(region, np.arange(n_counties))
    county_size = np.bincount(region, minlength=n_counties)
    friend = (county_start[region] + (rng.random(n_res) * county_size[region]).astype(np.int64)).astype(
        np.int32
    )
    p_phone = np.select([age < 10, age < 15, age < 70], [0.05, 0.5, 0.97], 0.6)
    phone = rng.random(n_res) < p_phone

    # id prefixes: mostly the home county, some another county, a few another province
    county_codes = np.array([int(c.code) for c in preset.counties])
    outside_prefixes = np.array([int(p) for reg in preset.outside for p in reg.prefixes])
    pr = rng.random(n_res)
    prefix = np.where(
        pr < 0.85,
        county_codes[region],
        np.where(
            pr < 0.95,
            county_codes[other_county],
            outside_prefixes[rng.integers(0, len(outside_prefixes), n_res)],
        ),
    )

    # visitors: adults, in groups drawn by the caller; each from an outside region
    n_vis = int(n_visitors_by_origin.sum())
    v_region = np.repeat(np.arange(len(preset.outside)), n_visitors_by_origin).astype(np.int16) + n_counties
    v_age = rng.integers(20, 66, n_vis).astype(np.int32)
    v_sex = rng.integers(0, 2, n_vis).astype(np.int8)
    v_prefix = np.array(
        [int(rng.choice(preset.regions[g].prefixes)) for g in v_region] if n_vis else [], dtype=np.int64
    )

    all_age = np.concatenate([age, v_age])
    all_sex = np.concatenate([sex, v_sex])
    as_of = day_number(preset.as_of)
    birth = (as_of - np.floor(all_age * 365.25) - rng.integers(1, 365, len(all_age))).astype(np.int32)
    body = make_ids(np.concatenate([prefix, v_prefix]).astype(np.int64), birth, all_sex, rng)
    subject = ids.from_bodies(body).astype("S18")
    hh_ids = np.char.add(
        np.char.add(county_codes[hh_county].astype(str), "-"),
        np.char.zfill(np.arange(1, len(sizes) + 1).astype(str), 7),
    ).astype(object)
    return People(
        body=body,
        subject_id=subject,
        name=_names(np.concatenate([surname, _surnames(n_vis, rng)]), rng),
        birth=birth,
        sex=all_sex,
        household=np.concatenate([hh, np.full(n_vis, -1, dtype=np.int32)]),
        role=np.concatenate([role, np.full(n_vis, ROLE_VISITOR, dtype=np.int8)]),
        region=np.concatenate([region, v_region]),
        home=np.concatenate([home, np.full(n_vis, -1, dtype=np.int32)]),
        work=np.concatenate([work, np.full(n_vis, -1, dtype=np.int32)]),
        friend=np.concatenate([friend, np.full(n_vis, -1, dtype=np.int32)]),
        phone=np.concatenate([phone, np.ones(n_vis, dtype=bool)]),
        n_residents=n_res,
        household_start=(np.cumsum(sizes) - sizes).astype(np.int64),
        household_size=sizes.astype(np.int64),
        household_id=hh_ids,
    )


def build_hotels(preset: Preset, cells: Cells, rng: np.random.Generator) -> Hotels:
    """Hotels, half of them in the central county, placed by activity weight; 30–150 rooms each."""
    n = max(3, preset.persons // preset.persons_per_hotel)
    shares = np.array([c.share for c in preset.counties])
    county = np.where(rng.random(n) < 0.5, 0, rng.choice(len(shares), size=n, p=shares / shares.sum()))
    cell = cells.sample_in_regions(county, rng)
    codes = np.array([c.code for c in preset.counties], dtype=object)[county]
    hotel_id = np.array([f"H{code}{i + 1:04d}" for i, code in enumerate(codes)], dtype=object)
    return Hotels(hotel_id=hotel_id, cell=cell, rooms=rng.integers(30, 151, n).astype(np.int32))
