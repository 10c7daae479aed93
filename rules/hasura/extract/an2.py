import re,subprocess,json,sys
def git(gd,*a): return subprocess.run(['git','--git-dir',gd,*a],capture_output=True,text=True).stdout
def key(v):
    m=re.match(r'v(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.?(\d+))?',v)
    a,b,c,pre,n=m.groups(); return (int(a),int(b),int(c),{'alpha':0,'beta':1,'rc':2,None:3}[pre],int(n or 0))
EXPR=r"""("[^"]*"|'[^']*'|\{(?:[^{}]|\{[^{}]*\})*\})"""
RX=[re.compile(r"<Analytics\b[^<]*?\bname="+EXPR,re.S),
    re.compile(r"""\b(?:getAnalyticsAttributes|useGetAnalyticsAttributes)\(\s*((?:'[^']*'|"[^"]*"|`[^`]*`|[^,)])*)""",re.S),
    re.compile(r"data-(?:analytics-name|trackid)="+EXPR),
    re.compile(r"\b(?:trackId|onCancelAnalyticsName|onSubmitAnalyticsName|analyticsName|dataAnalyticsName)="+EXPR),
    re.compile(r"""\b(?:trackId|onCancelAnalyticsName|onSubmitAnalyticsName|analyticsName|dataAnalyticsName|tracking)\s*:\s*((?:'[^']*'|"[^"]*"|`[^`]*`))""")]
LIT=re.compile(r"""'([^'\n]*)'|"([^"\n]*)"|`([^`]*)`""")
first={}; pats={}
for line in open('rels.tsv'):
    v,gd,rev=line.split()
    if key(v)<key('v2.23.0-beta.1'): continue
    files=[f for f in git(gd,'grep','-lE','Analytics|data-analytics-name|data-trackid|trackId|AnalyticsName',rev,'--','frontend').split() if not re.search(r'(\.test\.|\.stories\.|/mocks?/|__tests__|\.spec\.|/Analytics/)',f)]
    for f in files:
        t=git(gd,'show',f)
        for rx in RX:
            for m in rx.finditer(t):
                expr=' '.join(x for x in m.groups() if x is not None)
                for lm in LIT.finditer(expr):
                    s=next(x for x in lm.groups() if x is not None)
                    if not s.strip() or ' ' in s.strip() and len(s)>60: continue
                    if '${' in s:
                        p=re.sub(r'\\\$\\\{[^}]*\\\}','[A-Za-z0-9_-]{1,64}',re.escape(s).replace('\\-','-'))
                        pats.setdefault(p,(v,f.split(':',1)[1]))
                    else:
                        first.setdefault(s,(v,f.split(':',1)[1]))
print(len(first),len(pats))
json.dump({'first':first,'pats':pats},open('an2.json','w'),indent=0)
for p,(v,f) in pats.items(): print(v,p,f.split('/src/')[-1])
odd=[x for x in first if not re.fullmatch(r'[A-Za-z0-9_.:-]+',x)]; print(odd)
