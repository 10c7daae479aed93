import re, subprocess
import os
N=os.environ["HASURA_V1_GIT"]; H=os.environ["HASURA_MASTER_GIT"]  # git dirs: a copy with the v1.x tags (nizar-m/graphql-engine), upstream master
def key(v):
    m=re.match(r'v(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.?(\d+))?',v)
    a,b,c,pre,n=m.groups(); return (int(a),int(b),int(c),{'alpha':0,'beta':1,'rc':2,None:3}[pre],int(n or 0))
rels={}
tags=subprocess.run(['git','--git-dir',N,'tag'],capture_output=True,text=True).stdout.split()
for t in tags:
    if t.startswith('v1.0.0-alpha0') or t=='v1.0.0-alpha0': continue
    if key(t)>=key('v1.0.0-alpha36'): rels[t]=(N,t)
out=subprocess.run(['git','--git-dir',H,'log','--format=%H %s','--grep=tag release','master'],capture_output=True,text=True).stdout
for line in out.splitlines():
    h,s=line.split(' ',1)
    for v in re.findall(r'v\d+\.\d+\.\d+(?:-(?:alpha|beta|rc)\.?\d+)?(?:-pro\.\d+)?',s):
        if '-pro' in v: continue
        if key(v)<=key('v1.3.0'): continue
        rels.setdefault(v,(H,h))
order=sorted(rels,key=key)
with open('rels.tsv','w') as f:
    for v in order: f.write(f"{v}\t{rels[v][0]}\t{rels[v][1]}\n")
print(len(order), order[:3], order[-3:])
