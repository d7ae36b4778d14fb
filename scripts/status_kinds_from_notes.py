#!/usr/bin/env python3
"""One-off: gave every hand-written status row a `kind` (from its `note`, by the ordered rules below)
and `source: handwritten`. Kept so the mapping can be audited; rerunning it is idempotent."""
import json,re,sys,collections
CL=[('duplicate',r'dup|superseded|in favour|same as'),
 ('redirect',r'redirect|wrong repo|not ours|not our bug|upstream|third party|elsewhere|discussion|partner|other team|support forum'),
 ('inactivity',r'inactiv|stale|no response|repro closing|cant-repro|autoclosed|inactive'),
 ('decision',r"wontfix|won't|works-as-intended|works as intended|expected|intended|not planned|out of scope|not a goal|limitation|not on plan|no we wont|pr-closed|not a bug|it's a feature|removed flag|no backport|no longer maintained|locked|can't fix|can't restore|not available|hardware issue|terse no|float"),
 ('wrap_up',r'wrap|glad|thanks|confirmed by user|confirmed resolved|confirmed with customer|no worries|ty cheers|per request|confirm closing|marking resolved|all sorted|confirm received'),
 ('released',r'fix|releas|deploy|merged|shipped|patched|yanked|incident|configurable now|try update|pushed|should work on main|after deploy|check spam|awaiting|try-x|try again|team-confirmed|README updated|typo fixed|docs redeploy|breaking change'),
 ('short_closer',r'terse|short closer|emoji done|^closing|closing ticket|closing completed|^bot$'),
 ('done',r'^done|refund|removed|reset|unlocked|restored|role changed|seats|sso|domain|invoice|credit|cancelled|downgraded|extended|reshipped|rescheduled|booking|merged accounts|deleted|export sent|whitelisted|data export'),
]
IP=[('escalation',r'escalat|hand ?off|looping|cc maintainer|forwarded|check with team|ticket opened|repro flag|asked upstream|upstream reported|need admin'),
 ('promise',r'pending|tracked|planning|roadmap|milestone|scheduled|pr-up|PR up|draft PR|partial fix|security patch|eng says|deploying|accepted|logged|filed bug|refund|status|next release|fixed-needs-release|closing-words-open|will-close|merged|priority|self-assign|queued|backport|needs design|triage label|needs investigation label|reply later|monday'),
 ('diagnostic',r'try|diagnostic|workaround|incognito|reinstall|reconnect|narrow|rerun|confirm rc|confirm now|awaiting'),
 ('ack',r'^ack|on it|brb|short ack|will look|acknowledg'),
 ('info_request',r'ask|question|request id|which plan|verify account|need sample|repro\?|version q|still happen|still an issue|did that help|just checking|clarify|follow[- ]up|ping reporter|stale|wait for user|awaiting customer|does this'),
 ('investigating',r'check|investigat|repro|confirmed bug|bisect|root cause|on-call|hmm|incident|internal|apology|delay|can\'t see|can\'t test|eta|multiple reports|known issue|rerunning|waiting on provider|shipment'),
 ('explain_then_ask',r'polite|long|partial|answer|glad|help.wanted|pr-review|PR welcome|invite PR|expected-but|not-fixed|maybe|design|scope|not sure|reopen|not fixed|arm64|DM'),
]
def kind(r):
    n=r.get('note','') or ''
    n2=n.split(':',1)[1].strip() if n.startswith(('gh:','slack:')) else n
    n2=n2.replace('hard: ','')
    for k,p in (CL if r['label']=='closed' else IP):
        if re.search(p,n2,re.I): return k
    if r['label']=='closed': return 'answer'
    return 'info_request' if '?' in r['text'] else 'investigating'
c=collections.Counter()
for f in sys.argv[1:]:
    rows=[json.loads(l) for l in open(f)]
    out=[]
    for r in rows:
        d={'text':r['text'],'label':r['label'],'kind':kind(r),'source':'handwritten'}
        for k,v in r.items():
            if k not in d: d[k]=v
        c[(r['label'],d['kind'])]+=1
        out.append(d)
    open(f,'w').write(''.join(json.dumps(d,ensure_ascii=False)+'\n' for d in out))
for k,v in sorted(c.items()): print(k,v)
