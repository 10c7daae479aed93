import re, subprocess, sys, json
def git(gd,*a): return subprocess.run(['git','--git-dir',gd,*a],capture_output=True,text=True).stdout
def strip_comments(s):
    s=re.sub(r'/\*.*?\*/','',s,flags=re.S)
    return re.sub(r'(?m)//.*$','',s)
def tree(gd,rev):
    files=[f for f in git(gd,'ls-tree','--name-only',rev,'cli/commands/').split() if f.endswith('.go') and not f.endswith('_test.go')]
    src={f:strip_comments(git(gd,'show',f'{rev}:{f}')) for f in files}
    allsrc='\n'.join(src.values())
    consts=dict(re.findall(r'\b(\w+)\s*=\s*"([^"]*)"',allsrc))
    funcs={}   # func name -> use of command literal it returns (first literal)
    varuse={}  # var name -> use
    adds=[]    # (parentvar or func-scope, [child exprs], enclosing func)
    for f,s in src.items():
        # split by top-level func
        parts=re.split(r'(?m)^func ',s)
        head=parts[0]
        for m in re.finditer(r'(?:var\s+)?(\w+)\s*=\s*&cobra\.Command\{(.*?)\n\}',head,re.S):
            u=re.search(r'Use:\s*("([^"]*)"|(\w+))',m.group(2))
            varuse[m.group(1)]=(u.group(2) if u.group(2) is not None else consts.get(u.group(3),'?'+u.group(3))).split()[0] if u else '?'
        for p in parts[1:]:
            fm=re.match(r'(?:\([^)]*\)\s*)?(\w+)',p); fname=fm.group(1)
            lits=list(re.finditer(r'(\w+)\s*:?=\s*&cobra\.Command\s*\{',p))
            local={}
            for lm in lits:
                body=p[lm.end():lm.end()+3000]
                u=re.search(r'\bUse:\s*("([^"]*)"|([\w.]+))',body)
                use=(u.group(2) if u.group(2) is not None else consts.get(u.group(3).split('.')[-1],'?'+u.group(3))) if u else '?'
                use=use.split()[0] if use.strip() else '?'
                local[lm.group(1)]=use
            if not lits:
                r=re.search(r'return\s*&cobra\.Command\s*\{',p)
                if r:
                    body=p[r.end():r.end()+3000]; u=re.search(r'\bUse:\s*("([^"]*)"|([\w.]+))',body)
                    use=(u.group(2) if u.group(2) is not None else consts.get(u.group(3).split('.')[-1],'?'+u.group(3))) if u else '?'
                    funcs[fname]=use.split()[0]
            if local:
                funcs.setdefault(fname,list(local.values())[0])
            for am in re.finditer(r'(\w+)\.AddCommand\((.*?)\)\s*\n',p,re.S):
                children=re.findall(r'(\w+)\((?:ec|o\.EC|[\w.&]*)?[^()]*\)|(\w+)\s*[,)\n]',am.group(2)+'\n')
                ch=[a or b for a,b in children if (a or b) not in ('ec',)]
                parent=local.get(am.group(1)) or varuse.get(am.group(1))
                adds.append((parent,ch,fname))
            # commands built but added via helper loops not handled
    def use_of(x): return funcs.get(x) or varuse.get(x)
    edges={}
    for parent,ch,fn in adds:
        for c in ch:
            u=use_of(c)
            if u: edges.setdefault(parent,set()).add(u)
    # need a tree by function identity since names like 'apply' repeat: resolve via funcs instead
    return src,funcs,varuse,adds,consts
if __name__=='__main__':
    gd,rev=sys.argv[1],sys.argv[2]
    src,funcs,varuse,adds,consts=tree(gd,rev)
    print(json.dumps(funcs,indent=0)[:3000]); print(varuse); print(adds[:50])
