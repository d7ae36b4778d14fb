#!/usr/bin/env python3
"""Role-labelled grouping data for the role scorers (issue 14), written to /work/cache/grouping/.

Nothing here is committed: the outputs are derived from public datasets read at training time.

Sources (licences in training-data/grouping/SOURCES.md):
  * HubSpot Developer Community Slack archive (GitHub `hubspotdev/devslackarchive`, MIT): help
    channels with Slack threads. Threads are flattened into the channel (every reply becomes a
    top-level message, no thread_ts) and the thread is the gold conversation; a message that is
    neither a thread root nor a reply is a conversation of its own. Roles: the *team* is the
    community's regular helpers, people whose messages are mostly replies in other people's threads
    (computed over the whole archive); everyone else is a customer.
  * Ubuntu IRC train/dev splits (../shared/data/grouping/, CC BY 4.0): same gold, roles derived the
    same way from the annotated links (regular helpers = team, everyone else = customer).
  * training-data/grouping/scenes.txt: hand-written support-channel scenes (role-labelled; format
    in the file's header), each its own channel, repeated --scene-copies times in training.
  * With --discord, two Discord archives whose help threads are flattened the same way (a thread's
    first message is its root, the later ones replies; a thread is the gold conversation; the team
    is the archive's regular helpers by the Slack rule, computed over that archive):
    - OpsMill (Infrahub) community Q&A forum (GitHub `opsmill/discord_archive`, MIT; data.zip
      extracted with the repository into /work/cache/grouping/opsmill-raw/): held out whole as a
      second estimate from another archive, never trained on (it was scored before the 7-day
      open-ticket bound was chosen: BENCHMARKS.md, seventh round);
    - MeshCore community Discord (GitHub `MrAlders0n/meshcore-discord-archive`, MIT; site/data/ of
      the repository in /work/cache/grouping/meshcore-raw/): the development forums and the General
      Chat channels' threads of at most --max-thread messages, for training.

Outputs (JSON Lines in the format of ../shared/data/grouping/README.md, plus `role`):
  slack-train.jsonl, slack-dev.jsonl   HubSpot help channels, split by channel (dev channels never
                                       trained on)
  slack-val.jsonl                      older chunks of the training channels that the training cap
                                       leaves out (never trained on): where settings are chosen
  slack-dev-threads.jsonl              slack-dev with the Slack threads kept (replies carry
                                       thread_ts): only top-level messages are decided by the model
  ubuntu-roles-train.jsonl, ubuntu-roles-dev.jsonl
  roles-train.jsonl                    slack-train + ubuntu-roles-train + scenes (what the role
                                       scorers are trained on)
  roles-dev.jsonl                      slack-dev + ubuntu-roles-dev (the dev used during training)
  scenes.jsonl                         the hand-written scenes once (a behaviour check, trained on)
  with --discord:
  discord-dev.jsonl                    the OpsMill Q&A forum (never trained on)
  discord-train.jsonl                  the MeshCore threads
  roles-train-discord.jsonl            roles-train with discord-train after the Slack lines

Usage:
  git clone <the archive> (or use the `fetch` mirror) and extract it into
  /work/cache/grouping/hubspot-raw/, then
  python3 scripts/grouping_data.py [--raw DIR] [--out DIR] [--discord]
Without --discord the outputs are the same bytes as before the option existed.
"""
import argparse
import collections
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared", "data", "grouping")

# Help channels (people ask, others answer, in threads). Dev channels are held out of training.
DEV_CHANNELS = ["developer-tools", "serverless-functions", "cms-react"]
TRAIN_CHANNELS = [
    "api", "hubl", "javascript", "local-development", "themes", "modules", "email-development",
    "workflows", "design-manager", "new-to-hubspot-cms", "templates", "ui-extensions",
    "hs-cms-boilerplate", "help-the-community", "marketplace", "data-driven-content", "seo",
]
# More help channels (threads in most messages, people asking and others answering), used with
# --more-channels; none of them is a dev channel.
MORE_TRAIN_CHANNELS = [
    "cms-membership", "cms-migration", "drag-n-drop-pages", "multi-language", "accessibility",
    "crm-development-beta", "automation-workflows-api-beta", "drag-drop-email-beta",
    "js-frameworks-in-hubspot-cms", "academy-courses",
]
# Messages of these kinds are not conversation turns.
SKIP_SUBTYPES = {"channel_topic", "channel_purpose", "channel_leave", "pinned_item", "channel_archive",
                 "channel_name", "tombstone", "channel_join"}
# Context lines at the start of each chunk: fed to the grouper, not scored (as the Ubuntu corpus).
CONTEXT_LINES = 50


def epoch(stamp):
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in stamp else "%Y-%m-%d %H:%M:%S"
    t = datetime.datetime.strptime(stamp, fmt).replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def load_channel(raw, name):
    """All messages of one channel, in time order, with their thread root (or None)."""
    base = os.path.join(raw, "channel_" + name)
    msgs = []
    for dirpath, _, files in os.walk(base):
        for f in files:
            if f.endswith(".json"):
                with open(os.path.join(dirpath, f)) as fh:
                    msgs.extend(m for m in (json.load(fh) or []) if m)
    msgs = [m for m in msgs if m.get("subtype") not in SKIP_SUBTYPES and m.get("text", "").strip()]
    msgs.sort(key=lambda m: m["time_stamp"])
    root_of = {}
    for m in msgs:
        for r in m.get("replies") or []:
            root_of.setdefault(r["time_stamp"], m["time_stamp"])
    out = []
    for k, m in enumerate(msgs):
        poster = m.get("poster") or {}
        user = poster.get("poster_handle") or f"unknown-{name}-{k}"
        ts = m["time_stamp"]
        root = root_of.get(ts)
        if root == ts or "replies" in m:
            root = None
        out.append({"stamp": ts, "ts": epoch(ts), "user": user, "text": m["text"], "root": root,
                    "is_root": bool(m.get("replies"))})
    return out


def slack_helpers(channels):
    """Regular helpers: at least 20 replies in other people's threads, and at least 3 such replies
    per thread they started themselves."""
    replies, roots = collections.Counter(), collections.Counter()
    for msgs in channels.values():
        by_stamp = {m["stamp"]: m for m in msgs}
        for m in msgs:
            if m["is_root"]:
                roots[m["user"]] += 1
            elif m["root"] and m["root"] in by_stamp and by_stamp[m["root"]]["user"] != m["user"]:
                replies[m["user"]] += 1
    return {u for u, n in replies.items() if n >= 20 and n >= 3 * roots[u] and not u.startswith("unknown-")}


def slack_chunks(name, msgs, helpers, months, source="hubspot"):
    """Cuts a channel into chunks of `months` months; yields corpus lines per chunk."""
    chunks = collections.OrderedDict()
    for m in msgs:
        y, mo = int(m["stamp"][:4]), int(m["stamp"][5:7])
        key = (y * 12 + mo - 1) // months
        chunks.setdefault(key, []).append(m)
    for key, ms in chunks.items():
        y, mo = divmod(key * months, 12)
        channel = f"{source}/{name}/{y}-{mo + 1:02d}"
        idx_of = {}
        last_in = {}
        lines = []
        for i, m in enumerate(ms):
            root = m["root"]
            if root is None:
                gold_idx, parents = i, [i]
                idx_of.setdefault(m["stamp"], i)
                last_in[i] = i
                eval_ = i >= CONTEXT_LINES
            elif root in idx_of:
                gold_idx = idx_of[root]
                parents = [last_in[gold_idx]]
                last_in[gold_idx] = i
                eval_ = i >= CONTEXT_LINES and gold_idx >= CONTEXT_LINES
            else:
                # The root is in an earlier chunk: its own conversation here, not scored.
                gold_idx, parents, eval_ = i, [i], False
                idx_of.setdefault(root, i)
                last_in[i] = i
            lines.append({
                "thread_root": (root is not None) and (lines[gold_idx]["ts"] if gold_idx != i else epoch(root)),
                "channel": channel, "idx": i, "ts": m["ts"] + (i % 1000) * 1e-6, "user": m["user"],
                "text": m["text"], "kind": "msg", "system": False,
                "role": "agent" if m["user"] in helpers else "customer", "eval": eval_,
                "gold": f"{channel}:{gold_idx}", "parents": parents,
            })
        if sum(l["eval"] for l in lines) >= 20:
            yield lines


def with_threads(lines):
    """The same lines with Slack threads kept: a reply carries its root's ts as `thread_ts` (ts
    written as strings so the two match), so the grouper attaches it by rule and only top-level
    messages are decided by the scorers."""
    out = []
    for l in lines:
        l = dict(l)
        root = l.pop("thread_root")
        l["ts"] = f"{l['ts']:.6f}"
        if root is not False:
            l["thread_ts"] = f"{root:.6f}"
        out.append(l)
    return out


def snowflake_time(ident):
    """Discord ids carry their creation time (milliseconds since 2015-01-01)."""
    return ((int(ident) >> 22) + 1_420_070_400_000) / 1000.0


def discord_channel(threads):
    """Discord threads of one channel (a forum, or a chat channel's threads) flattened into one
    stream in the message format of load_channel: a thread's first message is its root, every
    later message a reply to it; a thread of one message is a conversation of its own."""
    msgs, seen = [], set()
    for thread in threads:
        thread = sorted(thread, key=lambda m: int(m[0]))
        stamps = []
        for ident, user, text in thread:
            t = snowflake_time(ident)
            while t in seen:  # stamps are keys: keep them unique
                t += 1e-6
            seen.add(t)
            stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
            stamps.append((stamp, t, user, text))
        root = stamps[0][0]
        for k, (stamp, t, user, text) in enumerate(stamps):
            msgs.append({"stamp": stamp, "ts": t, "user": user, "text": text,
                         "root": root if k and len(stamps) > 1 else None,
                         "is_root": k == 0 and len(stamps) > 1})
    msgs.sort(key=lambda m: m["ts"])
    return msgs


def load_opsmill(raw):
    """OpsMill (Infrahub) community Discord Q&A forum (GitHub `opsmill/discord_archive`, data.zip):
    one JSON file per forum thread. Returns {channel name: messages}."""
    import zipfile
    names, threads = {}, collections.defaultdict(list)
    with zipfile.ZipFile(os.path.join(raw, "data.zip")) as z:
        for f in sorted(z.namelist()):
            if not f.endswith(".json"):
                continue
            data = json.loads(z.read(f))
            if f.endswith("channel_data.json"):
                names.update({c["id"]: c["name"] for c in data})
                continue
            for item in data:
                # type 0: a message, 19: a reply; others (thread renames) are not turns.
                turns = [(m["id"], m["author"]["username"], m["content"]) for m in item["messages"]
                         if m.get("type") in (0, 19) and m.get("content", "").strip()]
                if turns:
                    threads[item["thread"]["parent_id"]].append(turns)
    return {names.get(p, p): discord_channel(ts) for p, ts in threads.items()}


# MeshCore Discord forums (people report problems and ask, others answer, one thread per topic);
# the chat channels' own messages are not in the archive, only their threads.
MESHCORE_FORUMS = ["firmware-development", "software-development", "hardware-development"]


def load_meshcore(raw, max_thread):
    """MeshCore community Discord (GitHub `MrAlders0n/meshcore-discord-archive`, site/data/content):
    the forum threads and the General Chat channels' threads, each thread of at most `max_thread`
    messages (longer ones are running project logs, not one conversation). Returns
    {channel name: messages}."""
    base = os.path.join(raw, "site", "data")
    with open(os.path.join(base, "threads.json")) as fh:
        meta = {t["id"]: t for t in json.load(fh)}
    threads = collections.defaultdict(list)
    for f in sorted(os.listdir(os.path.join(base, "content"))):
        with open(os.path.join(base, "content", f)) as fh:
            d = json.load(fh)
        t = meta.get(d["id"])
        if t is None or t["is_channel_main"]:
            continue
        if t["forum"] in MESHCORE_FORUMS:
            channel = t["forum"]
        elif t["forum"] == "General Chat":
            channel = t["channel"]
        else:
            continue
        turns = [(m["id"], m["author_handle"], m["text"]) for m in d["messages"]
                 if m.get("author_handle") and m.get("text", "").strip()
                 and not m["text"].startswith("Started a thread")]
        if turns and len(turns) <= max_thread:
            threads[channel].append(turns)
    return {c: discord_channel(ts) for c, ts in threads.items()}


def discord_lines(source, channels, months):
    """Corpus lines of a Discord archive: team = its regular helpers (slack_helpers, computed over
    the whole archive), threads as gold conversations, cut into chunks like the Slack channels."""
    helpers = slack_helpers(channels)
    print(f"{source}: {len(helpers)} helpers (team) over {len(channels)} channels", file=sys.stderr)
    out = []
    for name in sorted(channels):
        for chunk in slack_chunks(name, channels[name], helpers, months, source=source):
            out.extend(chunk)
    return out


def flat(lines):
    return [{k: v for k, v in l.items() if k != "thread_root"} for l in lines]


def ubuntu_helpers(path):
    """Ubuntu regular helpers: >= 20 annotated messages replying to someone else, at least 80% of
    their annotated messages such replies, at most 10% starting a conversation."""
    per_channel = collections.defaultdict(dict)
    recs = []
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            recs.append(r)
            per_channel[r["channel"]][r["idx"]] = r
    total, answer, start = collections.Counter(), collections.Counter(), collections.Counter()
    for r in recs:
        if not r["eval"] or r["system"]:
            continue
        total[r["user"]] += 1
        ps = [p for p in r["parents"] if p != r["idx"]]
        if not ps:
            start[r["user"]] += 1
        elif any(per_channel[r["channel"]].get(p, {}).get("user") != r["user"] for p in ps):
            answer[r["user"]] += 1
    return recs, {u for u in total if answer[u] >= 20 and answer[u] >= 0.8 * total[u] and start[u] <= 0.1 * total[u]}


def load_scenes(path, copies):
    """Scenes of scenes.txt as corpus lines: one channel per scene (and copy), every line scored."""
    scenes, cur = [], None
    with open(path) as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line.startswith("== "):
                cur = {"title": line[3:].strip(), "msgs": []}
                scenes.append(cur)
            elif line.strip() and not line.startswith("#"):
                head, text = line.split(" | ", 1)
                secs, role, user, label = head.split()
                cur["msgs"].append((float(secs), role, user, label, text))
    out = []
    for copy in range(copies):
        for n, sc in enumerate(scenes):
            channel = f"scenes/{n:02d}-{copy}"
            first, last = {}, {}
            for i, (secs, role, user, label, text) in enumerate(sc["msgs"]):
                start = first.setdefault(label, i)
                parents = [last.get(label, i)]
                last[label] = i
                # Copies rename users so a copy is not a repeat of the same people.
                u = f"{user}{copy}" if copy else user
                t = text.replace(f"<@{user}>", f"<@{u}>") if copy else text
                for other in {m[2] for m in sc["msgs"]}:
                    if copy:
                        t = t.replace(f"<@{other}>", f"<@{other}{copy}>")
                out.append({
                    "channel": channel, "idx": i, "ts": 1_700_000_000 + secs + i * 1e-6, "user": u,
                    "text": t, "kind": "msg", "system": False,
                    "role": "agent" if role == "T" else "customer", "eval": True,
                    "gold": f"{channel}:{start}", "parents": parents,
                })
    return out, len(scenes)


def write(path, lines):
    with open(path, "w") as fh:
        for i, l in enumerate(lines):
            fh.write(json.dumps({"id": i, **{k: v for k, v in l.items() if k != "id"}}) + "\n")
    evals = sum(1 for l in lines if l["eval"])
    agents = sum(1 for l in lines if l.get("role") == "agent")
    print(f"{path}: {len(lines)} lines, {evals} scored, {agents} by the team", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default="/work/cache/grouping/hubspot-raw")
    ap.add_argument("--out", default="/work/cache/grouping")
    ap.add_argument("--months", type=int, default=3, help="months per Slack chunk (one grouper channel)")
    ap.add_argument("--max-train-lines", type=int, default=40000, help="cap on Slack train lines (newest kept)")
    ap.add_argument("--val-lines", type=int, default=20000, help="cap on slack-val lines")
    ap.add_argument("--ubuntu-channels", type=int, default=30, help="Ubuntu train channels in roles-train (0: all)")
    ap.add_argument("--more-channels", action="store_true",
                    help="also train on MORE_TRAIN_CHANNELS (smaller help channels)")
    ap.add_argument("--scene-copies", type=int, default=5, help="copies of each hand-written scene in training")
    ap.add_argument("--discord", action="store_true",
                    help="also write discord-dev.jsonl (OpsMill, held out) and discord-train.jsonl (MeshCore), "
                         "and roles-train-discord.jsonl = roles-train plus discord-train")
    ap.add_argument("--opsmill-raw", default="/work/cache/grouping/opsmill-raw")
    ap.add_argument("--meshcore-raw", default="/work/cache/grouping/meshcore-raw")
    ap.add_argument("--discord-months", type=int, default=6, help="months per Discord chunk")
    ap.add_argument("--max-thread", type=int, default=150, help="longest MeshCore thread kept (messages)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    train_names = TRAIN_CHANNELS + (MORE_TRAIN_CHANNELS if args.more_channels else [])
    names = DEV_CHANNELS + train_names
    channels = {n: load_channel(args.raw, n) for n in names}
    # Helpers are computed over every channel of the archive, not only these.
    everything = {}
    for d in os.listdir(args.raw):
        if d.startswith("channel_"):
            n = d[len("channel_"):]
            everything[n] = channels.get(n) or load_channel(args.raw, n)
    helpers = slack_helpers(everything)
    print(f"{len(helpers)} Slack helpers (team)", file=sys.stderr)

    dev, train = [], []
    for n in DEV_CHANNELS:
        for chunk in slack_chunks(n, channels[n], helpers, args.months):
            dev.extend(chunk)
    train_chunks = [c for n in train_names for c in slack_chunks(n, channels[n], helpers, args.months)]
    # Newest chunks first until the cap (recent years have threads throughout).
    train_chunks.sort(key=lambda c: c[0]["ts"], reverse=True)
    unused = []
    for c in train_chunks:
        if len(train) + len(c) > args.max_train_lines:
            unused.append(c)
            continue
        train.extend(c)
    # Validation split for choosing settings (open-ticket bounds, epochs, the new-conversation
    # bias), so slack-dev stays an estimate: older chunks of the training channels that the cap
    # left out (2018 on, when threads were in common use), every other one, up to --val-lines.
    val = []
    for c in unused[::2]:
        if c[0]["channel"].rsplit("/", 1)[1] >= "2018" and len(val) + len(c) <= args.val_lines:
            val.extend(c)
    write(os.path.join(args.out, "slack-val.jsonl"), flat(val))
    write(os.path.join(args.out, "slack-dev.jsonl"), flat(dev))
    write(os.path.join(args.out, "slack-dev-threads.jsonl"), with_threads(dev))
    train = flat(train)
    write(os.path.join(args.out, "slack-train.jsonl"), train)

    ub = {}
    for split in ["train", "dev"]:
        recs, _ = ubuntu_helpers(os.path.join(SHARED, f"ubuntu-{split}.jsonl"))
        ub[split] = recs
    # Helpers from the train split only (dev roles use the same list, as a team roster would).
    _, uhelpers = ubuntu_helpers(os.path.join(SHARED, "ubuntu-train.jsonl"))
    print(f"{len(uhelpers)} Ubuntu helpers (team)", file=sys.stderr)
    for split, recs in ub.items():
        for r in recs:
            r["role"] = "agent" if r["user"] in uhelpers else "customer"
        write(os.path.join(args.out, f"ubuntu-roles-{split}.jsonl"), recs)

    scene_path = os.path.join(REPO, "training-data", "grouping", "scenes.txt")
    scenes, n_scenes = load_scenes(scene_path, args.scene_copies)
    print(f"{n_scenes} scenes x {args.scene_copies} copies", file=sys.stderr)
    write(os.path.join(args.out, "scenes.jsonl"), load_scenes(scene_path, 1)[0])
    ub_train = ub["train"]
    if args.ubuntu_channels:
        keep = list(dict.fromkeys(r["channel"] for r in ub_train))[: args.ubuntu_channels]
        keep = set(keep)
        ub_train = [r for r in ub_train if r["channel"] in keep]
    write(os.path.join(args.out, "roles-train.jsonl"), train + ub_train + scenes)
    if args.discord:
        ddev = flat(discord_lines("opsmill", load_opsmill(args.opsmill_raw), args.discord_months))
        write(os.path.join(args.out, "discord-dev.jsonl"), ddev)
        dtrain = flat(discord_lines("meshcore", load_meshcore(args.meshcore_raw, args.max_thread),
                                    args.discord_months))
        write(os.path.join(args.out, "discord-train.jsonl"), dtrain)
        write(os.path.join(args.out, "roles-train-discord.jsonl"), train + dtrain + ub_train + scenes)
    write(os.path.join(args.out, "roles-dev.jsonl"), dev + ub["dev"])


if __name__ == "__main__":
    main()
