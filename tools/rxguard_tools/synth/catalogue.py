"""Static facts of the synthetic population: conditions and their drugs, unmonitored
drugs, medical service items, institution names. Illustrative, not a real catalogue.

Monitored drugs, pack sizes and prices always come from the knowledge base
(`rules/drugs.json`); a drug code listed here that the knowledge base lacks is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    """A chronic condition: its ICD-10 code, the monitored drugs treating it (one per
    ingredient is picked), whether it is a registered chronic disease (med_type 14),
    its relative frequency in the population, and whether its drugs stay at hospitals."""

    name: str
    dx: str
    drugs: tuple[str, ...]
    registered: bool = False
    weight: float = 1.0
    hospital_only: bool = False


CONDITIONS: tuple[Condition, ...] = (
    Condition(
        "hypertension",
        "I10",
        (
            "XC08CA01A001",
            "XC09CA03A001",
            "XC09CA04A001",
            "XC09CA07A001",
            "XC09AA04A001",
            "XC07AB02A001",
            "XC07AB07A001",
            "XC08CA05A001",
        ),
        registered=True,
        weight=10,
    ),
    Condition(
        "type 2 diabetes",
        "E11.9",
        (
            "XA10BA02A001",
            "XA10BB12A001",
            "XA10BB09A001",
            "XA10BF01A001",
            "XA10BH01A001",
            "XA10BH05A001",
            "XA10BK01A001",
            "XA10BK03A001",
            "XA10AE04A001",
            "XA10BJ05A001",
        ),
        registered=True,
        weight=7,
    ),
    Condition("dyslipidaemia", "E78.5", ("XC10AA05A001", "XC10AA07A001", "XC10AX09A001"), weight=6),
    Condition("coronary heart disease", "I25.1", ("XB01AC04A001", "XC10AA07A001"), registered=True, weight=3),
    Condition("atrial fibrillation", "I48.9", ("XB01AF01A002", "XB01AE07A001", "XB01AF02A001"), weight=1.2),
    Condition("chronic hepatitis B", "B18.1", ("XJ05AF10A001", "XJ05AF07A001", "XJ05AF13A001"), True, 1.5),
    Condition("COPD", "J44.9", ("XR03BB04A001", "XR03AL03A001", "XR03AK07A001"), registered=True, weight=1.2),
    Condition("asthma", "J45.9", ("XR03AK06A001", "XR03DC03A001"), weight=1.0),
    Condition("hypothyroidism", "E03.9", ("XH03AA01A001",), weight=1.2),
    Condition("gout", "M10.9", ("XM04AA03A001", "XM04AA01A001"), weight=1.0),
    Condition("osteoporosis", "M81.9", ("XM05BA04A001", "XA11CC04A001"), weight=1.0),
    Condition("benign prostatic hyperplasia", "N40", ("XG04CA02A001", "XG04CB01A001"), weight=1.0),
    Condition("Parkinson disease", "G20", ("XN04BA02A001", "XN04BD02A001"), registered=True, weight=0.5),
    Condition("Alzheimer disease", "G30.9", ("XN06DA02A001", "XN06DX01A001"), registered=True, weight=0.5),
    Condition("schizophrenia", "F20.9", ("XN05AH03A001", "XN05AX13A001", "XN05AX12A001"), True, 0.5),
    Condition("depression", "F32.9", ("XN06AB10A001", "XN06AB06A001"), weight=1.0),
    Condition("epilepsy", "G40.9", ("XN03AX14A001", "XN03AX09A001", "XN03AX18A001"), True, 0.5),
    Condition("reflux oesophagitis", "K21.0", ("XA02BC02A001", "XA02BC04A001"), weight=1.5),
    Condition("lung cancer", "C34.9", ("XL01EB04A001", "XL01EB01A001"), True, 0.25, hospital_only=True),
    Condition("prostate cancer", "C61", ("XL02BX03A001",), True, 0.2, hospital_only=True),
    Condition("rheumatoid arthritis", "M06.9", ("XL04AF01A001",), True, 0.3, hospital_only=True),
    Condition("kidney transplant", "Z94.0", ("XL04AD02A001", "XL04AA06A001"), True, 0.15, hospital_only=True),
)


@dataclass(frozen=True)
class Item:
    """An unmonitored drug or a medical service: code, name, price per unit billed."""

    code: str
    name: str
    price: float
    service: bool = False


# Drugs the catalogue does not monitor (antibiotics, cold remedies, Chinese patent medicines ...).
UNMONITORED_DRUGS: tuple[Item, ...] = (
    Item("XJ01CA04B031", "阿莫西林胶囊", 12.8),
    Item("XJ01FA09B012", "克拉霉素片", 24.5),
    Item("XJ01DC02B007", "头孢呋辛酯片", 31.0),
    Item("XN02BE01B020", "对乙酰氨基酚片", 6.2),
    Item("XM01AE01B044", "布洛芬缓释胶囊", 14.6),
    Item("XR06AE07B015", "西替利嗪片", 18.9),
    Item("XA03FA03B009", "多潘立酮片", 16.4),
    Item("XA07BA01B002", "蒙脱石散", 19.8),
    Item("XB05BB01B101", "氯化钠注射液", 4.5),
    Item("XA11CA01B006", "维生素AD软胶囊", 22.0),
    Item("XB03AA07B011", "硫酸亚铁片", 9.9),
    Item("ZA01AAL0123010100", "感冒清热颗粒", 21.5),
    Item("ZA09BAL0456020100", "连花清瘟胶囊", 28.8),
    Item("ZA12EAX0078030100", "复方丹参滴丸", 36.0),
    Item("ZA14HAC0231010100", "银杏叶片", 42.0),
    Item("ZA16BAS0089020100", "六味地黄丸", 18.0),
)

# Expensive unmonitored items that drive pharmacy spending (nutrition, patent medicines).
EXPENSIVE_ITEMS: tuple[Item, ...] = (
    Item("ZA12FAA0301010100", "安宫牛黄丸", 780.0),
    Item("ZB04BAR0112010100", "片仔癀", 620.0),
    Item("XB05BA10B003", "肠内营养粉剂", 268.0),
    Item("ZA14DAB0510020100", "西洋参含片", 398.0),
    Item("XA16AX30B001", "复合氨基酸胶囊", 186.0),
)

REGISTRATION = Item("110200001", "普通门诊诊查费", 25.0, service=True)
REGISTRATION_EXPERT = Item("110200002", "副主任医师门诊诊查费", 50.0, service=True)
LAB_TESTS: tuple[Item, ...] = (
    Item("250102001", "血细胞分析", 20.0, service=True),
    Item("250301001", "血糖测定", 8.0, service=True),
    Item("250305010", "肝功能检测", 60.0, service=True),
    Item("250203001", "尿常规", 12.0, service=True),
    Item("210102015", "胸部X线摄影", 70.0, service=True),
    Item("220600002", "心电图", 25.0, service=True),
)
REHAB_SESSION = Item("340200001", "运动疗法", 45.0, service=True)
DIALYSIS = Item("311000006", "血液透析", 410.0, service=True)
BED_DAY = Item("110900001", "普通病房床位费", 60.0, service=True)
NURSING_DAY = Item("120100002", "二级护理", 28.0, service=True)
INFUSION = Item("120400006", "静脉输液", 15.0, service=True)

# Acute conditions: (name, dx, monitored drug code or None, packs)
ACUTE_EPISODES: tuple[tuple[str, str, str | None, int], ...] = (
    ("common cold", "J06.9", None, 0),
    ("bronchitis", "J20.9", None, 0),
    ("influenza", "J11.1", "XJ05AH02A001", 1),
    ("cough", "R05", "XR05DA09A001", 2),
    ("insomnia", "G47.0", "XN05CD04A001", 1),
    ("back pain", "M54.5", "XN02AX02A001", 2),
    ("anxiety", "F41.9", "XN05BA12A001", 1),
    ("gastroenteritis", "A09.9", None, 0),
    ("asthma attack", "J45.9", "XR03AC02A001", 1),
)

HOSPITAL_NAMES = (
    "市第{}人民医院",
    "区中心医院{}",
    "中医医院{}分院",
    "社区卫生服务中心{}",
    "大学附属医院{}",
)
PHARMACY_NAMES = ("益丰大药房{}店", "老百姓大药房{}店", "国大药房{}店", "雷允上药房{}店", "第一医药{}店")
DISTRICTS = ("310101", "310104", "310105", "310106", "310107", "310109", "310110", "310112", "310115")
