"""Seed-scale data for the jobs service: ``python -m services.jobs.seed_scale`` (``make seed-scale``).

Generates the platform's volumes (6,300 employers, 690,000 postings across the 183 counties and 8 categories with
realistic Chinese titles and descriptions, some Latin words among them, and 190,000 resumes) straight into the jobs
database of ``MONGO_URI`` / ``UNIONHUB_DB_PREFIX``, in ``insert_many`` batches, with progress output. Documents are
shaped exactly as the service writes them (same search keys, same ``search_stats`` counts), so search works on them
at once. No events are published for seeded data: it stands for history.

Sizes: ``--employers``, ``--postings``, ``--resumes`` (tests use small numbers); ``--drop`` empties the seeded
collections first; ``--seed`` fixes the random generator.
"""
import argparse
import datetime
import random
import sys
import time


from unionhub_kit import ids, regions

from . import domain, search, store

DAY = datetime.timedelta(days=1)

# title, category, monthly pay range (yuan), weight; categories are the occupation classification's major groups
TITLES = [
    ("焊工", "6", (5000, 9000), 30), ("电焊工", "6", (5500, 9500), 30), ("氩弧焊工", "6", (6000, 11000), 12),
    ("二保焊工", "6", (5500, 9000), 10), ("数控车工", "6", (5000, 9000), 15), ("CNC操作工", "6", (4800, 8000), 15),
    ("叉车司机", "6", (4500, 7000), 15), ("装配工", "6", (4000, 6500), 25), ("普工", "6", (3800, 6000), 40),
    ("电工", "6", (5000, 8500), 20), ("钳工", "6", (5000, 8000), 10), ("质检员", "6", (4000, 6500), 15),
    ("注塑工", "6", (4200, 6800), 10), ("包装工", "6", (3500, 5500), 15), ("木工", "6", (6000, 10000), 10),
    ("钢筋工", "6", (6500, 11000), 10), ("水电工", "6", (5500, 9000), 12), ("油漆工", "6", (5500, 9000), 8),
    ("外卖骑手", "4", (5000, 10000), 40), ("快递员", "4", (5000, 9000), 35), ("保安", "4", (3000, 4800), 35),
    ("护工", "4", (4000, 7000), 25), ("育婴师", "4", (5000, 9000), 15), ("月嫂", "4", (7000, 15000), 10),
    ("家政服务员", "4", (4000, 7000), 20), ("保洁员", "4", (2800, 4200), 25), ("商场导购", "4", (3500, 6500), 20),
    ("收银员", "4", (3000, 4500), 15), ("房产经纪人", "4", (4000, 15000), 20), ("网约车司机", "4", (6000, 12000), 20),
    ("货车司机", "4", (7000, 13000), 25), ("厨师", "4", (5000, 9000), 20), ("服务员", "4", (3200, 5000), 25),
    ("养老护理员", "4", (4000, 6500), 15), ("美容师", "4", (4000, 8000), 8), ("仓库理货员", "4", (4000, 6000), 12),
    ("软件工程师", "2", (10000, 25000), 12), ("Java开发工程师", "2", (10000, 22000), 8), ("会计", "2", (4500, 8000), 15),
    ("护士", "2", (5000, 9000), 12), ("教师", "2", (5000, 9000), 10), ("机械工程师", "2", (8000, 15000), 8),
    ("电气工程师", "2", (8000, 16000), 8), ("数据分析师", "2", (9000, 18000), 6), ("建筑施工员", "2", (6000, 10000), 8),
    ("行政文员", "3", (3500, 5500), 15), ("前台接待", "3", (3200, 5000), 10), ("仓库管理员", "3", (4000, 6000), 12),
    ("客服专员", "3", (3800, 6000), 15), ("人事专员", "3", (4500, 7000), 8),
    ("车间主任", "1", (8000, 14000), 5), ("项目经理", "1", (12000, 25000), 5), ("门店店长", "1", (7000, 12000), 8),
    ("生产经理", "1", (10000, 18000), 4),
    ("农业技术员", "5", (4500, 7000), 6), ("养殖工", "5", (4000, 6500), 6), ("茶叶采摘工", "5", (3000, 5000), 5),
    ("果园工人", "5", (3000, 4800), 5),
    ("国防教育教练员", "7", (5000, 8000), 1),
    ("兼职促销员", "8", (3000, 5000), 6), ("临时搬运工", "8", (4000, 6500), 6),
]

DUTIES = {
    "6": ["负责焊接作业，持焊工证优先", "熟悉CNC编程与数控设备操作", "会开叉车，持forklift证优先", "按图纸完成装配",
          "负责产品质量检验", "welding经验两年以上", "负责设备日常维护保养", "能适应倒班和加班"],
    "4": ["负责片区配送，多劳多得", "照顾老人日常起居", "负责门店销售与陈列", "熟悉成都路线，驾龄三年以上",
          "持A2驾照，跑长途干线", "负责婴幼儿护理", "服务态度好，有责任心", "负责客户接待和带看"],
    "2": ["熟悉Java和Python开发", "持有执业资格证书", "负责PLC控制系统调试", "熟练使用Excel和SQL",
          "负责项目技术方案", "本科及以上学历", "有CAD制图经验"],
    "3": ["负责日常行政事务", "熟练使用Office办公软件", "负责出入库登记", "普通话标准，沟通能力强"],
    "1": ["负责车间生产管理", "带领团队完成业绩目标", "有五年以上管理经验", "负责门店运营"],
    "5": ["负责田间技术指导", "负责猪牛养殖管理", "吃苦耐劳，适应户外工作"],
    "7": ["退役军人优先", "负责国防教育训练"],
    "8": ["周末兼职，日结工资", "负责货物搬运装卸"],
}
BENEFITS = ["五险一金", "包吃包住", "月休四天", "节日福利", "提供住宿", "加班有补贴", "试用期一个月", "年终奖金",
            "交通补贴", "带薪年假"]
SHOP = ["蜀道", "天府", "锦江", "川渝", "峨眉", "青城", "嘉陵", "岷江", "巴山", "龙泉", "金沙", "熊猫", "芙蓉", "西岭"]
TRADE = [("制造", "机械制造有限公司"), ("物流", "物流有限公司"), ("建筑", "建设工程有限公司"), ("餐饮", "餐饮管理有限公司"),
         ("家政", "家政服务有限公司"), ("零售", "商贸有限公司"), ("信息技术", "科技有限公司"), ("医疗", "医院管理有限公司"),
         ("农业", "农业开发有限公司"), ("汽车", "汽车服务有限公司")]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰建国志红梅晨阳浩宇欣怡子涵雨萱"
SKILLS = ["焊接", "电焊证", "CNC", "叉车证", "驾驶", "A2驾照", "护理", "育婴", "Excel", "Python", "Java", "收银",
          "普通话", "客服", "烹饪", "电工证", "CAD", "PLC", "销售", "仓储管理"]


def progress(what, done, total, started):
    rate = done / max(time.time() - started, 1e-6)
    eta = (total - done) / rate if rate else 0
    print("  %-9s %9d / %-9d %8.0f/s  eta %5.0fs" % (what, done, total, rate, eta), flush=True)


def employers(rng, n, counties, now):
    out = []
    for i in range(n):
        county = rng.choice(counties)
        trade, suffix = rng.choice(TRADE)
        body = "91%s%09d" % (county["code"], i)
        out.append({"_id": "seed-emp-%05d" % i, "name": "%s%s%s%s" % (county["name_zh"][:2], rng.choice(SHOP),
                                                                      rng.choice("鑫华盛达兴隆泰恒"), suffix),
                    "uscc": ids.make_uscc(body), "region_code": county["code"], "industry": trade,
                    "size": rng.choice(domain.EMPLOYER_SIZES), "created_at": now - rng.randint(200, 2000) * DAY,
                    "created_by": "seed"})
    return out


def posting(rng, emps, counties, now, days, weights):
    title, cat, (lo, hi), _ = rng.choices(TITLES, weights)[0]
    emp = rng.choice(emps)
    county = emp["region_code"] if rng.random() < 0.8 else rng.choice(counties)["code"]
    salary_min = rng.randrange(lo, hi, 100)
    created = now - datetime.timedelta(seconds=rng.randrange(days * 86400))
    created = created.replace(microsecond=created.microsecond // 1000 * 1000)
    duties = rng.sample(DUTIES[cat], 2)
    doc = {"_id": store.new_id(), "employer_id": emp["_id"], "employer_name": emp["name"],
           "title": title, "category": cat, "region_code": county,
           "address": "%s%s路%d号" % (regions.all_codes()[county], rng.choice(SHOP), rng.randint(1, 999)),
           "salary_min": salary_min, "salary_max": salary_min + rng.randrange(500, 4000, 100),
           "headcount": rng.choice((1, 2, 3, 5, 10, 20, 50)), "education": rng.choice(domain.EDUCATION[:7]),
           "experience_years": rng.choice((0, 0, 1, 2, 3, 5)),
           "description": "%s，%s。%s，%s。" % (duties[0], duties[1], *rng.sample(BENEFITS, 2)),
           "valid_until": now + rng.randint(7, 180) * DAY, "status": "open", "created_at": created,
           "order_key": None, "applications": 0}
    doc["order_key"] = search.order_key(store.now_ms(created), doc["_id"])
    if rng.random() < 0.08:  # some postings were closed by their employers
        doc.update(status="closed", closed_reason="closed", closed_at=now, search_keys=[])
    else:
        doc["search_keys"] = search.search_keys(doc)
    return doc


def resume(rng, i, counties):
    return {"_id": "seed-usr-%06d" % i, "name": rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, rng.choice((1, 2)))),
            "education": rng.choice(domain.EDUCATION[1:7]), "experience_years": rng.randint(0, 25),
            "skills": rng.sample(SKILLS, rng.randint(1, 4)),
            "desired_categories": rng.sample(domain.CATEGORIES[:6], rng.randint(1, 2)),
            "desired_region_codes": [search.region_prefixes(rng.choice(counties)["code"])[1]],
            "summary": "吃苦耐劳，%s经验%d年。" % (rng.choice(SKILLS), rng.randint(1, 10)),
            "created_at": datetime.datetime.now(datetime.timezone.utc),
            "updated_at": datetime.datetime.now(datetime.timezone.utc)}


def insert(coll, docs, what, total, state):
    coll.insert_many(docs, ordered=False)
    state[what] = state.get(what, 0) + len(docs)
    if state[what] % state["report"] < len(docs) or state[what] == total:
        progress(what, state[what], total, state["started"])


def seed(db, n_employers, n_postings, n_resumes, batch=2000, days=150, rng_seed=44, drop=False):
    rng = random.Random(rng_seed)
    now = datetime.datetime.now(datetime.timezone.utc)
    counties = regions.counties()
    if drop:
        for name in ("employers", "jobs", "search_stats", "resumes"):
            db.drop_collection(name)
    store.ensure_indexes(db)
    state = {"report": max(batch, (n_postings // 40) // batch * batch or batch)}
    emps = employers(rng, n_employers, counties, now)
    state["started"] = time.time()
    for k in range(0, len(emps), batch):
        insert(db.employers, emps[k:k + batch], "employers", len(emps), state)
    weights = [t[3] for t in TITLES]
    tally = store.StatsTally()
    state["started"] = time.time()
    for k in range(0, n_postings, batch):
        docs = [posting(rng, emps, counties, now, days, weights) for _ in range(k, min(n_postings, k + batch))]
        for d in docs:
            tally.add(d["search_keys"], d["order_key"])
        insert(db.jobs, docs, "postings", n_postings, state)
    n_keys = tally.write(db)
    print("  stats     %d search keys counted" % n_keys, flush=True)
    state["started"] = time.time()
    for k in range(0, n_resumes, batch):
        insert(db.resumes, [resume(rng, i, counties) for i in range(k, min(n_resumes, k + batch))], "resumes",
               n_resumes, state)
    return {"employers": len(emps), "postings": n_postings, "resumes": n_resumes, "search_keys": n_keys}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--employers", type=int, default=6300)
    ap.add_argument("--postings", type=int, default=690000)
    ap.add_argument("--resumes", type=int, default=190000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--days", type=int, default=150, help="postings were created over this many past days")
    ap.add_argument("--seed", type=int, default=44)
    ap.add_argument("--drop", action="store_true", help="empty employers, postings, stats and resumes first")
    args = ap.parse_args(argv)
    db = store.open_from_env()
    if db is None:
        return 2
    print("seeding %s: %d employers, %d postings, %d resumes" % (db.name, args.employers, args.postings,
                                                               args.resumes), flush=True)
    if not args.drop and db.employers.find_one({"_id": "seed-emp-00000"}, {"_id": 1}):
        print("%s holds seeded data already: run with --drop to seed it again" % db.name)
        return 1
    started = time.time()
    out = seed(db, args.employers, args.postings, args.resumes, args.batch, args.days, args.seed, args.drop)
    print("done in %.0fs: %s" % (time.time() - started, out), flush=True)
    return 0


def run(ctx):
    """The umbrella's step (``deploy/seed_scale.py``): the member projection (what ``member_joined`` wrote: the
    masked phone employers see) and the employment data, both scaled like the users (690,000 postings at 7.5 M)."""
    db = ctx.db("jobs")
    store.ensure_indexes(db)
    for _b, people in ctx.batches(db, "members"):
        ctx.insert(db.members, [{"_id": p["user_id"], "member_id": p["member"]["member_id"],
                                 "phone_masked": ids.mask_phone(p["phone"])}
                                for p in people if p["member"] and p["member"]["status"] != "pending"])
    share = ctx.users / 7_500_000
    ctx.once(db, "employment", lambda: seed(db, max(10, int(6300 * share)), max(100, int(690000 * share)),
                                            max(10, int(190000 * share)), drop=True))


if __name__ == "__main__":
    sys.exit(main())
